//! A cluster's network allow-list: the client networks (CIDRs) PostgreSQL, HAProxy and
//! PgBouncer accept connections from.
//!
//! What is always allowed, whatever the list says: loopback (processes on a member's own
//! host, and the `local` provider whose members all live on 127.0.0.1) and the members'
//! own addresses (streaming replication, `pg_rewind`, and HAProxy and PgBouncer, which
//! connect to PostgreSQL from their member's address on behalf of clients — they check
//! the list themselves, against the client's real address).
//!
//! The default list of a new cluster is "the location's networks": sovdb has no notion of
//! a location's networks, so it derives them from the addresses of the location's hosts:
//! each IPv4 address's /24 and each IPv6 address's /64 (the usual subnet sizes; a host
//! named by a DNS name adds nothing). See docs/security.md, "Network allow-lists".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Loopback, always allowed.
pub const LOOPBACK: &[&str] = &["127.0.0.1/32", "::1/128"];

/// Parses one entry of an allow-list: `ADDRESS/PREFIX` (IPv4 or IPv6) or a bare address
/// (one host: /32 or /128). Returns its canonical form (`10.0.0.0/8`, `fd00::/8`).
/// Refuses an address with bits set beyond the prefix (`10.1.2.3/8`): it is most likely
/// a typo, and PostgreSQL and HAProxy would silently read it as the whole network.
pub fn parse_cidr(s: &str) -> Result<String, String> {
    let t = s.trim();
    let (addr, prefix) = match t.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (t, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        format!("{s:?} is not a CIDR: give an IPv4 or IPv6 network such as 10.0.0.0/8, 192.168.1.0/24 or fd00::/8")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        None => max,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if n <= max && !p.starts_with('+') => n,
            _ => return Err(format!("{s:?}: the prefix length must be a number from 0 to {max}")),
        },
    };
    let network = mask(ip, prefix);
    if network != ip {
        return Err(format!(
            "{s:?} has host bits set beyond /{prefix}: did you mean {network}/{prefix}? (a single host is {ip}/{max})"
        ));
    }
    Ok(format!("{ip}/{prefix}"))
}

/// Parses and de-duplicates a list, keeping its order; the first bad entry is the error.
pub fn parse_list<'a>(entries: impl IntoIterator<Item = &'a String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        let c = parse_cidr(e)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn mask(ip: IpAddr, prefix: u32) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The default allow-list of a cluster in a location whose hosts have these addresses:
/// each IPv4 address's /24 and each IPv6 address's /64, in order, without duplicates.
/// Addresses that are not IP addresses (DNS names) are skipped.
pub fn default_networks<'a>(host_addresses: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in host_addresses {
        let Ok(ip) = a.trim().parse::<IpAddr>() else { continue };
        let prefix = if ip.is_ipv4() { 24 } else { 64 };
        let c = format!("{}/{prefix}", mask(ip, prefix));
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// How a member's address appears as a source: `/32` or `/128` for an IP address, the
/// name itself otherwise (PostgreSQL and HAProxy resolve it).
pub fn host_source(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("{ip}/32"),
        Ok(IpAddr::V6(ip)) => format!("{ip}/128"),
        Err(_) => address.to_string(),
    }
}

/// The list after adding `allow` and removing `deny` (both already parsed).
pub fn change(current: &[String], allow: &[String], deny: &[String]) -> Vec<String> {
    let mut out: Vec<String> = current.iter().filter(|c| !deny.contains(c)).cloned().collect();
    for a in allow {
        if !out.contains(a) && !deny.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_parsed_to_their_canonical_form() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(parse_cidr(" 192.168.1.0/24 ").unwrap(), "192.168.1.0/24");
        assert_eq!(parse_cidr("10.1.2.3").unwrap(), "10.1.2.3/32");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(parse_cidr("::/0").unwrap(), "::/0");
        assert_eq!(parse_cidr("FD00:0::/8").unwrap(), "fd00::/8");
        assert_eq!(parse_cidr("2001:db8::1").unwrap(), "2001:db8::1/128");
        assert_eq!(parse_cidr("2001:db8:0:0::/64").unwrap(), "2001:db8::/64");
    }

    #[test]
    fn bad_cidrs_are_refused_with_what_to_give() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0/8",
            "300.0.0.0/8",
            "fd00::/129",
            "any",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/9",
            "fd00::/x",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse_cidr("10.1.2.3/8").unwrap_err();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        let e = parse_cidr("fd00::1/64").unwrap_err();
        assert!(e.contains("fd00::/64"), "{e}");
        let e = parse_cidr("example.com").unwrap_err();
        assert!(e.contains("not a CIDR"), "{e}");
    }

    #[test]
    fn lists_lose_duplicates_and_keep_their_order() {
        let l: Vec<String> = ["10.0.0.0/8", "10.0.0.0/8", "1.2.3.4"].into_iter().map(String::from).collect();
        assert_eq!(parse_list(&l).unwrap(), vec!["10.0.0.0/8", "1.2.3.4/32"]);
        let bad: Vec<String> = ["10.0.0.0/8", "nope"].into_iter().map(String::from).collect();
        assert!(parse_list(&bad).is_err());
    }

    #[test]
    fn the_default_is_each_host_addresss_subnet() {
        let d = default_networks(["10.7.0.2", "10.7.0.3", "10.8.1.9", "db.example", "2001:db8::5"]);
        assert_eq!(d, vec!["10.7.0.0/24", "10.8.1.0/24", "2001:db8::/64"]);
        assert_eq!(default_networks(["127.0.0.1"]), vec!["127.0.0.0/24"]);
        assert!(default_networks([]).is_empty());
    }

    #[test]
    fn allow_adds_and_deny_removes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cur = s(&["10.0.0.0/24", "10.1.0.0/24"]);
        assert_eq!(
            change(&cur, &s(&["10.2.0.0/24", "10.0.0.0/24"]), &[]),
            s(&["10.0.0.0/24", "10.1.0.0/24", "10.2.0.0/24"])
        );
        assert_eq!(change(&cur, &[], &s(&["10.0.0.0/24"])), s(&["10.1.0.0/24"]));
        assert_eq!(change(&cur, &[], &s(&["10.9.0.0/24"])), cur);
    }

    #[test]
    fn members_are_single_hosts() {
        assert_eq!(host_source("10.0.0.2"), "10.0.0.2/32");
        assert_eq!(host_source("fd00::2"), "fd00::2/128");
        assert_eq!(host_source("db1.example"), "db1.example");
    }
}
