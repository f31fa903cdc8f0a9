//! Who may use the server. The URL `clan gui` prints carries a one-time token; redeeming it
//! (`GET /?token=…`) sets the session cookie (`HttpOnly`, `SameSite=Strict`, named after the
//! port) and redirects to `/#key=…`, handing the page its request key in the URL fragment
//! (never sent to a server). The page keeps the key in its origin's storage and sends it as
//! `X-Clan-Key` with every API request: cookies are shared by every port of a host, so a
//! cookie that leaked to another local server is not enough, and a cross-site form or
//! script cannot add the header (and no CORS header would let it read anything).
//!
//! Every request must name this server in `Host` (DNS rebinding: a page of another name that
//! resolves to 127.0.0.1 is refused) and, when a browser says where it comes from (`Origin`,
//! `Sec-Fetch-Site`), come from the origin it is sent to.

use std::sync::Mutex;

use rand::RngCore as _;

/// The header the page sends its request key in.
pub const KEY_HEADER: &str = "x-clan-key";

/// The secrets of one server run.
pub struct Security {
    port: u16,
    /// Tokens not yet redeemed; each works once.
    tokens: Mutex<Vec<String>>,
    session: String,
    key: String,
}

/// 32 random bytes, hex.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares without stopping at the first difference, so timing tells nothing of a secret.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

impl Security {
    pub fn new(port: u16) -> Security {
        Security {
            port,
            tokens: Mutex::new(vec![secret()]),
            session: secret(),
            key: secret(),
        }
    }

    /// The first one-time token (the one `clan gui` prints).
    pub fn token(&self) -> String {
        self.lock_tokens().first().cloned().unwrap_or_default()
    }

    /// A further one-time token, for another browser.
    pub fn new_token(&self) -> String {
        let token = secret();
        self.lock_tokens().push(token.clone());
        token
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `token` is an unredeemed token; it is used up either way.
    pub fn redeem(&self, token: &str) -> bool {
        let mut tokens = self.lock_tokens();
        match tokens.iter().position(|known| same(known, token)) {
            Some(index) => {
                tokens.remove(index);
                true
            }
            None => false,
        }
    }

    /// The names this server answers to: `Host` must be one of them, exactly.
    fn hosts(&self) -> [String; 3] {
        let port = self.port;
        [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ]
    }

    pub fn host_ok(&self, host: Option<&str>) -> bool {
        host.is_some_and(|host| self.hosts().iter().any(|known| known == host))
    }

    /// A request a browser says comes from another origin than the one it is sent to
    /// (`host`, already checked) is refused; one without `Origin` (a top-level navigation,
    /// a script such as curl) is judged by the cookie and key.
    pub fn origin_ok(&self, host: &str, origin: Option<&str>, fetch_site: Option<&str>) -> bool {
        let origin_ok = origin.is_none_or(|origin| {
            origin
                .strip_prefix("http://")
                .is_some_and(|origin_host| origin_host == host)
        });
        let site_ok = fetch_site.is_none_or(|site| matches!(site, "same-origin" | "none"));
        origin_ok && site_ok
    }

    /// The cookie's name: one per port, since a browser shares cookies across ports.
    pub fn cookie_name(&self) -> String {
        format!("clan-gui-{}", self.port)
    }

    /// The `Set-Cookie` value given when a token is redeemed.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name(),
            self.session
        )
    }

    /// Whether a `Cookie` header holds this server's session.
    pub fn session_ok(&self, cookies: Option<&str>) -> bool {
        let name = self.cookie_name();
        cookies.is_some_and(|cookies| {
            cookies.split(';').any(|pair| {
                pair.trim()
                    .split_once('=')
                    .is_some_and(|(key, value)| key == name && same(value, &self.session))
            })
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn key_ok(&self, key: Option<&str>) -> bool {
        key.is_some_and(|key| same(key, &self.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once_and_others_never() {
        let security = Security::new(8080);
        let token = security.token();
        assert!(!security.redeem("0".repeat(64).as_str()));
        assert!(!security.redeem(""));
        assert!(security.redeem(&token));
        assert!(!security.redeem(&token), "redeemed twice");
        let second = security.new_token();
        assert!(security.redeem(&second));
    }

    #[test]
    fn host_must_name_this_server_exactly() {
        let security = Security::new(8080);
        for good in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
            assert!(security.host_ok(Some(good)), "{good}");
        }
        for bad in [
            None,
            Some("127.0.0.1"),
            Some("127.0.0.1:8081"),
            Some("evil.example:8080"),
            Some("127.0.0.1:8080.evil.example"),
            Some("localhost.:8080"),
        ] {
            assert!(!security.host_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_this_origin_and_same_origin_fetches_pass() {
        let security = Security::new(8080);
        let host = "127.0.0.1:8080";
        assert!(security.origin_ok(host, None, None));
        assert!(security.origin_ok(host, Some("http://127.0.0.1:8080"), Some("same-origin")));
        assert!(security.origin_ok("localhost:8080", Some("http://localhost:8080"), None));
        assert!(security.origin_ok(host, None, Some("none")));
        // Another name of this server is another origin (another site) for the browser.
        assert!(!security.origin_ok(host, Some("http://localhost:8080"), None));
        assert!(!security.origin_ok(host, Some("http://127.0.0.1:9999"), None));
        assert!(!security.origin_ok(host, Some("null"), None));
        assert!(!security.origin_ok(host, Some("https://127.0.0.1:8080"), None));
        assert!(!security.origin_ok(host, None, Some("cross-site")));
        assert!(!security.origin_ok(host, None, Some("same-site")));
    }

    #[test]
    fn the_session_cookie_is_named_per_port_and_checked() {
        let security = Security::new(8080);
        let set = security.set_cookie();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let pair = set.split(';').next().unwrap();
        assert!(security.session_ok(Some(&format!("other=1; {pair}"))));
        let other_port = Security::new(8081);
        assert!(!other_port.session_ok(Some(pair)));
        assert!(!security.session_ok(Some("clan-gui-8080=wrong")));
        assert!(!security.session_ok(None));
        assert!(security.key_ok(Some(security.key())));
        assert!(!security.key_ok(Some("")));
    }
}
