//! Pagination: every list takes `limit` and an opaque `page_token` and answers one page and
//! the token for the next (absent on the last page). Tokens are the sort key of the last
//! item returned, so a page is stable while items are added or removed elsewhere.

use serde::{Deserialize, Serialize};

/// The largest page a client may ask for.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// The page size when a client doesn't say.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;

/// Query parameters of every list endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–1000 (default 100).
    pub limit: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A page request after its token was decoded: at most `limit` items whose sort key comes
/// after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        PageRequest { limit, after: None }
    }

    /// How many rows a store should fetch: one more than the page, to learn whether
    /// another page follows without a second query.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// Why page parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("limit must be between 1 and {MAX_PAGE_LIMIT} (got {0})")]
    BadLimit(u32),
    #[error("page_token is not one this server issued; start again without it")]
    BadToken,
}

impl PageParams {
    /// Checks the limit and decodes the token.
    pub fn resolve(&self) -> Result<PageRequest, PageError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
        if limit == 0 || limit > MAX_PAGE_LIMIT {
            return Err(PageError::BadLimit(limit));
        }
        let after = match &self.page_token {
            None => None,
            Some(t) => Some(decode_token(t).ok_or(PageError::BadToken)?),
        };
        Ok(PageRequest { limit, after })
    }
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows sorted by `key`; the extra row, when
    /// present, only tells that another page follows.
    pub fn from_rows(mut rows: Vec<T>, req: &PageRequest, key: impl Fn(&T) -> String) -> Self {
        let limit = req.limit as usize;
        let next_page_token = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_token(&key(last)))
        } else {
            None
        };
        Page { items: rows, next_page_token }
    }
}

/// Tokens are the hex of the last sort key: opaque to clients, trivially checked here.
fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Option<String> {
    if token.is_empty() || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let req = PageParams { limit: Some(2), page_token: None }.resolve().unwrap();
        let page = Page::from_rows(vec!["a", "b", "ç"], &req, |s| s.to_string());
        assert_eq!(page.items, vec!["a", "b"]);
        let token = page.next_page_token.unwrap();
        let next = PageParams { limit: Some(2), page_token: Some(token) }.resolve().unwrap();
        assert_eq!(next.after.as_deref(), Some("b"));
        for bad in ["", "zz", "abc", "ff"] {
            let p = PageParams { limit: None, page_token: Some(bad.into()) };
            assert_eq!(p.resolve(), Err(PageError::BadToken), "{bad}");
        }
    }

    #[test]
    fn last_page_has_no_token_and_limits_are_checked() {
        let req = PageRequest::first(3);
        assert_eq!(Page::from_rows(vec![1, 2, 3], &req, |i| i.to_string()).next_page_token, None);
        for bad in [0, MAX_PAGE_LIMIT + 1] {
            let p = PageParams { limit: Some(bad), page_token: None };
            assert_eq!(p.resolve(), Err(PageError::BadLimit(bad)));
        }
    }
}
