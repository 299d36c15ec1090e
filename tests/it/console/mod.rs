//! The operator console at `/console`: its security (`security.rs`,
//! over HTTPS with reqwest: sessions, CSRF, headers, escaping, scopes,
//! expiry) and its pages driven in a real headless Chromium (`browser.rs`).

mod browser;
mod browser_pages;
mod db_keys;
mod endpoints;
mod keys;
mod login;
mod overview;
mod pages;
mod retry;
mod security;
mod sessions;

use crate::support::{TestApp, crypto};

pub const SESSION_COOKIE: &str = "__Host-callgate_console";
pub const LOGIN_COOKIE: &str = "__Host-callgate_login";

/// A logged-in browser's state, kept by hand: the session cookie and the
/// CSRF token the pages carry. Redirects are not followed, so each answer
/// is seen as it is.
pub struct Console {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
    pub csrf: String,
}

/// A client that trusts only the test certificate and follows no redirect.
pub fn client(app: &TestApp) -> reqwest::Client {
    crypto();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(app.cert_pem.as_bytes()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The value of cookie `name` among a response's `Set-Cookie` headers,
/// with the header's whole text.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v[name.len() + 1..].split(';').next().unwrap().to_owned();
            (value, v)
        })
}

/// The `value` of the first `<input name="{name}">` in `html`.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The login page's form token and its cookie.
pub async fn login_form(app: &TestApp, client: &reqwest::Client) -> (String, String) {
    let page = client.get(app.url("/console/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let (cookie, _) = set_cookie(&page, LOGIN_COOKIE).expect("the login page sets its cookie");
    let html = page.text().await.unwrap();
    let field = hidden(&html, "login_csrf").expect("the login form has its token");
    assert_eq!(cookie, field);
    (cookie, field)
}

/// Posts the login form with `key`; the raw answer.
pub async fn post_login(app: &TestApp, client: &reqwest::Client, key: &str) -> reqwest::Response {
    let (cookie, field) = login_form(app, client).await;
    client
        .post(app.url("/console/login"))
        .header("cookie", format!("{LOGIN_COOKIE}={cookie}"))
        .form(&[("login_csrf", field.as_str()), ("api_key", key)])
        .send()
        .await
        .unwrap()
}

impl Console {
    /// Logs in with the app's key `name` (which must hold `console`).
    pub async fn login(app: &TestApp, name: &str) -> Console {
        Console::login_key(app, app.key(name)).await
    }

    /// Logs in with the plaintext `key` (from `keys.toml` or stored).
    pub async fn login_key(app: &TestApp, key: &str) -> Console {
        let client = client(app);
        let answer = post_login(app, &client, key).await;
        assert_eq!(answer.status(), 303, "login");
        assert_eq!(answer.headers()["location"], "/console");
        let (token, _) = set_cookie(&answer, SESSION_COOKIE).expect("a session cookie");
        let mut console = Console {
            client,
            base: app.base.clone(),
            token,
            csrf: String::new(),
        };
        let html = console.html("/console/jobs").await;
        console.csrf = hidden(&html, "csrf").expect("pages carry the CSRF token");
        console
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("{SESSION_COOKIE}={}", self.token))
            .send()
            .await
            .unwrap()
    }

    /// A page that must be a 200; its HTML, with the `/` that autoescaping
    /// writes as `&#x2f;` in attribute values read back as the browser
    /// reads it.
    pub async fn html(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap().replace("&#x2f;", "/")
    }

    /// POSTs `form` (the CSRF token is not added: tests choose it).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("cookie", format!("{SESSION_COOKIE}={}", self.token))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The stored session's id (the token's SHA-256, hex).
    pub fn id_hash(&self) -> String {
        hex::encode(callgate::crypto::sha256(self.token.as_bytes()))
    }
}
