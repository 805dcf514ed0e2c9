//! `TestBrowser`: Debian's headless Chromium driven through its `chromedriver` over the
//! W3C WebDriver protocol (plain JSON over HTTP on loopback, so a few calls with reqwest
//! are the whole client). Each browser gets its own profile in a temporary directory,
//! kept with chromedriver's log when the test failed.
//!
//! The browser accepts the test server's certificate for this session only
//! (`acceptInsecureCerts`): the server's HTTPS is real, its CA is just not one the
//! browser knows.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{finish_dir, free_port, kill_processes_mentioning, tail};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct TestBrowser {
    http: reqwest::blocking::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver: Child,
    dir: Option<tempfile::TempDir>,
}

/// An element of the page, as WebDriver names it.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Element {
    fn json(&self) -> Value {
        json!({ ELEMENT: self.0 })
    }
}

impl TestBrowser {
    /// Starts chromedriver and a headless Chromium with a window of `width`×`height`.
    pub fn start(width: u32, height: u32) -> TestBrowser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install Debian's chromium and chromium-driver (scripts/install-deps.sh does)"
            );
        }
        let dir = tempfile::Builder::new().prefix("sovdb-test-browser-").tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let mut driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            let ready = loop {
                if let Ok(Some(_)) = driver.try_wait() {
                    break false;
                }
                if let Ok(r) = http.get(format!("{base}/status")).send() {
                    if r.json::<Value>().map(|v| v["value"]["ready"] == true).unwrap_or(false) {
                        break true;
                    }
                }
                if Instant::now() > deadline {
                    let _ = driver.kill();
                    panic!("chromedriver did not answer within 20 s:\n{}", tail(&log, 20));
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if !ready {
                continue; // the port was taken meanwhile
            }
            let profile = dir.path().join("profile");
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--disable-extensions", "--disable-background-networking",
                             "--disable-sync", "--disable-features=Translate,MediaRouter",
                             format!("--user-data-dir={}", profile.display()),
                             format!("--window-size={width},{height}")],
                },
            }}});
            let answer: Value = http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .and_then(|r| r.json())
                .unwrap_or_else(|e| panic!("chromedriver: new session: {e}\n{}", tail(&log, 30)));
            let id = answer["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("chromedriver refused a session: {answer}\n{}", tail(&log, 30)))
                .to_string();
            return TestBrowser { http, session: format!("{base}/session/{id}"), driver, dir: Some(dir) };
        }
        panic!("chromedriver did not start on any of five free ports:\n{}", tail(&log, 20));
    }

    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let answer: Value = req.send().and_then(|r| r.json()).map_err(|e| format!("webdriver {path}: {e}"))?;
        if let Some(error) = answer["value"]["error"].as_str() {
            return Err(format!("webdriver {path}: {error}: {}", answer["value"]["message"]));
        }
        Ok(answer["value"].clone())
    }

    fn must(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body).unwrap_or_else(|e| panic!("{e}\npage text:\n{}", self.page_text()))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.must(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub fn script(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// The visible text of the page (for assertions and failure messages).
    pub fn page_text(&self) -> String {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": "return document.body ? document.body.innerText : ''", "args": []})),
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
    }

    /// Waits until `script` returns something other than null/false/"" (polling), and
    /// returns it; panics with the page's text after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.script(script, args.clone());
            match &got {
                Ok(Value::Null) | Ok(Value::Bool(false)) => {}
                Ok(Value::String(s)) if s.is_empty() => {}
                Ok(v) => return v.clone(),
                Err(_) => {} // the page is navigating
            }
            if Instant::now() > deadline {
                panic!("waited {timeout:?} for {what}; last answer {got:?}; page text:\n{}", self.page_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The element `css` selects, waiting up to `timeout` for it to appear.
    pub fn find(&self, css: &str, timeout: Duration) -> Element {
        let v = self.wait_for(
            &format!("element {css}"),
            timeout,
            "return document.querySelector(arguments[0])",
            vec![json!(css)],
        );
        Element(v[ELEMENT].as_str().expect("an element reference").to_string())
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        self.script("return document.querySelector(arguments[0]) !== null", vec![json!(css)])
            .unwrap_or(Value::Bool(false))
            == Value::Bool(true)
    }

    /// The form control whose `<label>` reads `label` exactly (so every control the test
    /// uses is labelled), waiting for it to appear.
    pub fn by_label(&self, label: &str) -> Element {
        let v = self.wait_for(
            &format!("a control labelled {label:?}"),
            Duration::from_secs(20),
            "const l = [...document.querySelectorAll('label')].find(l => l.textContent.trim() === arguments[0]); \
             return l ? l.control : null",
            vec![json!(label)],
        );
        Element(v[ELEMENT].as_str().expect("an element reference").to_string())
    }

    /// The button (or link styled as one) whose text is `text`, waiting for it.
    pub fn button(&self, text: &str) -> Element {
        let v = self.wait_for(
            &format!("a button {text:?}"),
            Duration::from_secs(20),
            "return [...document.querySelectorAll('button, a.button')].find(b => b.textContent.trim() === arguments[0] && b.offsetParent !== null) || null",
            vec![json!(text)],
        );
        Element(v[ELEMENT].as_str().expect("an element reference").to_string())
    }

    /// Whether a visible button reads `text`.
    pub fn has_button(&self, text: &str) -> bool {
        self.script(
            "return [...document.querySelectorAll('button, a.button')].some(b => b.textContent.trim() === arguments[0] && b.offsetParent !== null)",
            vec![json!(text)],
        )
        .unwrap_or(Value::Bool(false))
            == Value::Bool(true)
    }

    pub fn click(&self, e: &Element) {
        self.must(reqwest::Method::POST, &format!("/element/{}/click", e.0), None);
    }

    /// Types `text` into `e` as keystrokes (`\u{E007}` is Enter).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.must(reqwest::Method::POST, &format!("/element/{}/clear", e.0), None);
        self.must(reqwest::Method::POST, &format!("/element/{}/value", e.0), Some(json!({ "text": text })));
    }

    /// Picks the option of a `<select>` whose value is `value`.
    pub fn choose(&self, e: &Element, value: &str) {
        let ok = self
            .script(
                "const s = arguments[0]; if (![...s.options].some(o => o.value === arguments[1])) return false; \
                 s.value = arguments[1]; s.dispatchEvent(new Event('change', {bubbles: true})); return true",
                vec![e.json(), json!(value)],
            )
            .unwrap();
        assert_eq!(ok, Value::Bool(true), "no option {value:?}; page text:\n{}", self.page_text());
    }

    /// Resizes the window (the viewport follows).
    pub fn resize(&self, width: u32, height: u32) {
        self.must(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height })));
    }

    /// Saves a PNG of the viewport as `dir/name.png`.
    pub fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.must(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("base64 PNG")).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TestBrowser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.session).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Some(dir) = &self.dir {
            // Chromium's helpers, should any outlive the session.
            kill_processes_mentioning(dir.path());
        }
        if let Some(dir) = self.dir.take() {
            finish_dir(dir, "test browser");
        }
    }
}
