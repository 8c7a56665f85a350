//! Stickiness cookie mechanics: the names ALB uses, the opaque values, reading
//! them from `Cookie` headers and writing `Set-Cookie` text.
//!
//! A value is a [`Token`]: 128 bits of HMAC-SHA256 under a secret key over
//! (purpose, group name, target id). Clients cannot forge a value naming a
//! target they were never sent to, and a value from one group means nothing to
//! another (AWSALB is one name across all groups, as on ALB). The daemon keeps
//! the key in its state directory (`daemon/secrets.rs`), so sessions
//! survive a restart as well as a reload; without one the key is random per
//! process.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use ring::hmac;

/// Target-level cookie issued by the balancer (`lb_cookie` stickiness).
pub const LB_COOKIE: &str = "AWSALB";
/// The balancer's companion to the application's cookie (`app_cookie`
/// stickiness). ALB shards it into `-0`..`-3` for 4 KiB pieces; our value fits
/// in one.
pub const APP_COOKIE: &str = "AWSALBAPP-0";
/// Group-level cookie for weighted forward actions.
pub const GROUP_COOKIE: &str = "AWSALBTG";

/// An opaque cookie value naming a target (of a group) or a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(u128);

impl Token {
    /// Length of the hex text form.
    const HEX_LEN: usize = 32;

    pub fn for_target(group: &str, target_id: &str) -> Token {
        keyed(&["target", group, target_id])
    }

    pub fn for_group(group: &str) -> Token {
        keyed(&["group", group])
    }

    /// Exactly 32 hex digits; anything else is garbage and yields `None`.
    pub fn parse(text: &[u8]) -> Option<Token> {
        if text.len() != Self::HEX_LEN {
            return None;
        }
        text.iter()
            .try_fold(0u128, |acc, &c| {
                let digit = char::from(c).to_digit(16)?;
                Some(acc << 4 | u128::from(digit))
            })
            .map(Token)
    }

    fn write_hex(self, out: &mut String) {
        // Infallible: writing to a String.
        let _ = write!(out, "{:032x}", self.0);
    }
}

/// Bytes of a stickiness key.
pub const KEY_LEN: usize = 32;

static KEY: OnceLock<hmac::Key> = OnceLock::new();

/// Makes every token with `secret` from now on. Must come before the first
/// token is made; false if a key is already in use (and then it stays).
pub fn use_key(secret: &[u8; KEY_LEN]) -> bool {
    KEY.set(hmac::Key::new(hmac::HMAC_SHA256, secret)).is_ok()
}

/// The key in use; a random one if none was set.
fn key() -> &'static hmac::Key {
    KEY.get_or_init(|| {
        hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the system's random source failed")
    })
}

fn keyed(parts: &[&str]) -> Token {
    let mut mac = hmac::Context::with_key(key());
    for p in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p.as_bytes());
    }
    let tag = mac.sign();
    let mut first = [0u8; 16];
    first.copy_from_slice(&tag.as_ref()[..16]);
    Token(u128::from_be_bytes(first))
}

/// Every value of cookie `name` across all `Cookie` headers (HTTP/2 may split
/// them), in order, unquoted. Borrows from `headers`; never allocates.
pub fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let (n, v) = split_pair(pair)?;
            (n == name.as_bytes()).then(|| unquote(v))
        })
}

/// Whether any `Set-Cookie` in `headers` sets cookie `name`.
pub fn sets_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(SET_COOKIE).iter().any(|v| {
        let first = v
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        split_pair(first).is_some_and(|(n, _)| n == name.as_bytes())
    })
}

/// `name=value` with surrounding whitespace trimmed from both parts.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
}

/// RFC 6265 allows a value in double quotes.
fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

/// `Set-Cookie: <name>=<token>; Expires=<now + duration>; Path=/`. ALB uses
/// `Expires`, not `Max-Age`, and re-issues on every response so the window
/// restarts with each request.
pub fn set_cookie(name: &str, token: Token, now: SystemTime, duration: Duration) -> HeaderValue {
    let expires = now.checked_add(duration).unwrap_or(now);
    let mut text = String::with_capacity(name.len() + 80);
    text.push_str(name);
    text.push('=');
    token.write_hex(&mut text);
    text.push_str("; Expires=");
    crate::clock::write_http_date(&mut text, expires);
    text.push_str("; Path=/");
    HeaderValue::try_from(text).expect("cookie text is visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The key is the process's: the test that sets one runs again in a
    /// process of its own, told so by this variable.
    const OWN_PROCESS: &str = "XALB_TEST_STICKY_KEY_OWN_PROCESS";

    #[test]
    fn a_key_set_before_the_first_token_makes_every_token_and_stays() {
        if std::env::var_os(OWN_PROCESS).is_none() {
            let name = "targets::sticky::tests::a_key_set_before_the_first_token_makes_every_token_and_stays";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([name, "--exact", "--nocapture", "--test-threads=1"])
                .env(OWN_PROCESS, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains("1 passed"),
                "the test did not run again: {text}"
            );
            return;
        }
        let secret = [7u8; KEY_LEN];
        assert!(use_key(&secret), "the first key is taken");
        // HMAC-SHA256 of the length-prefixed parts, first 16 bytes.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let mut mac = hmac::Context::with_key(&key);
        for part in ["group", "g"] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let tag = mac.sign();
        let expected = u128::from_be_bytes(tag.as_ref()[..16].try_into().unwrap());
        assert_eq!(Token::for_group("g"), Token(expected));
        assert!(!use_key(&[8u8; KEY_LEN]), "a second key is refused");
        assert_eq!(
            Token::for_group("g"),
            Token(expected),
            "and changes nothing"
        );
    }

    fn headers(name: http::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn token_round_trip_and_separation() {
        let t = Token::for_target("web", "10.0.0.1:80");
        assert_eq!(t, Token::for_target("web", "10.0.0.1:80"));
        assert_ne!(t, Token::for_target("api", "10.0.0.1:80"));
        assert_ne!(t, Token::for_target("web", "10.0.0.2:80"));
        assert_ne!(Token::for_target("ab", "c"), Token::for_target("a", "bc"));
        assert_ne!(Token::for_group("web"), Token::for_target("web", ""));
        let mut hex = String::new();
        t.write_hex(&mut hex);
        assert_eq!(hex.len(), 32);
        assert_eq!(Token::parse(hex.as_bytes()), Some(t));
        assert_eq!(Token::parse(hex.to_uppercase().as_bytes()), Some(t));
        assert_eq!(Token::parse(&hex.as_bytes()[1..]), None);
        assert_eq!(Token::parse(b"zz"), None);
        assert_eq!(Token::parse(&[b'g'; 32]), None);
    }

    #[test]
    fn cookie_parsing() {
        let h = headers(
            COOKIE,
            &[
                "a=1; AWSALBTG=tg;AWSALB=x",
                "AWSALB = \"y\" ; b",
                "AWSALBAPP-0=",
            ],
        );
        let all: Vec<&[u8]> = cookie_values(&h, LB_COOKIE).collect();
        assert_eq!(all, [&b"x"[..], &b"y"[..]]);
        assert_eq!(cookie_values(&h, GROUP_COOKIE).next(), Some(&b"tg"[..]));
        assert_eq!(cookie_values(&h, APP_COOKIE).next(), Some(&b""[..]));
        assert_eq!(cookie_values(&h, "b").next(), None);
        assert_eq!(cookie_values(&h, "AWSAL").next(), None);
        assert_eq!(cookie_values(&HeaderMap::new(), LB_COOKIE).next(), None);
    }

    #[test]
    fn set_cookie_detection() {
        let h = headers(
            SET_COOKIE,
            &["other=1; Path=/session", "session = abc; HttpOnly"],
        );
        assert!(sets_cookie(&h, "session"));
        assert!(!sets_cookie(&h, "Path"));
        assert!(!sets_cookie(&h, "sess"));
        assert!(!sets_cookie(&HeaderMap::new(), "session"));
    }

    #[test]
    fn set_cookie_text() {
        let t = Token::for_group("blue");
        let v = set_cookie(GROUP_COOKIE, t, at(0), Duration::from_secs(86_400));
        let s = v.to_str().unwrap();
        let (pair, rest) = s.split_once("; ").unwrap();
        assert_eq!(pair.strip_prefix("AWSALBTG=").map(str::len), Some(32));
        assert_eq!(rest, "Expires=Fri, 02 Jan 1970 00:00:00 GMT; Path=/");
        let value = pair.split_once('=').unwrap().1;
        assert_eq!(Token::parse(value.as_bytes()), Some(t));
    }
}
