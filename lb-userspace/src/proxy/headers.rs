//! Request and response header rules for proxying (RFC 9110 §7.6.1 hop-by-hop
//! fields; the ALB's X-Forwarded-* and X-Request-Id).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Fields that describe one connection, never forwarded (besides the ones
/// the `Connection` field names).
pub const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop fields. With `keep_upgrade` (a WebSocket handshake
/// passing through) `Connection: upgrade` and `Upgrade` are kept.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One look over the names first, noting the ones present: a removal
    // costs a hash lookup, and most messages carry one such field or none.
    // Every hop-by-hop name, plus Upgrade.
    let mut present: [Option<HeaderName>; 8] = Default::default();
    let mut count = 0;
    for n in h.keys() {
        if (n == header::UPGRADE && !keep_upgrade) || HOP_BY_HOP.contains(n) {
            present[count] = Some(n.clone());
            count += 1;
        }
    }
    // Fields named by Connection go too. Its values are cloned out (a
    // reference count) so the map can change while their tokens are read,
    // and each token is removed by &str: no name is allocated.
    if present[..count]
        .iter()
        .any(|n| n.as_ref() == Some(&header::CONNECTION))
    {
        let mut values = h.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for v in first.iter().chain(&rest) {
            for token in v.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                // Host is the request's, never the connection's: a target
                // must not get a request without it.
                let kept = (keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
                    || token.eq_ignore_ascii_case("host");
                if !token.is_empty() && !kept {
                    h.remove(token);
                }
            }
        }
    }
    for n in present.into_iter().flatten() {
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether a comma-separated field value (Connection, say) lists `token`,
/// in any case.
pub fn has_token(v: &HeaderValue, token: &str) -> bool {
    lists_token(v.as_bytes(), token)
}

/// [`has_token`] on a field value's raw bytes.
pub fn lists_token(v: &[u8], token: &str) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Removes every `X-Amzn-Mtls-Clientcert*` field a client sent.
pub fn strip_mtls(h: &mut HeaderMap) {
    let ours: Vec<HeaderName> = h
        .keys()
        .filter(|n| crate::tls::client_cert::is_mtls_header(n))
        .cloned()
        .collect();
    for n in ours {
        h.remove(n);
    }
}

/// X-Forwarded-For (appended), -Proto and -Port (set), as the ALB does.
pub fn add_forwarded(h: &mut HeaderMap, client: IpAddr, proto: &'static str, port: u16) {
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
        v4 => v4,
    };
    // Written without the formatting machinery: this runs on every request.
    // The usual case (an IPv4 client, no earlier proxy) is built on the
    // stack, so the value costs one allocation.
    let mut priors = h.get_all(&X_FORWARDED_FOR).iter().peekable();
    let value = match client {
        IpAddr::V4(v4) if priors.peek().is_none() => {
            let mut buf = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                len += write_decimal(&mut buf[len..], octet);
            }
            HeaderValue::from_bytes(&buf[..len])
        }
        _ => {
            let mut value = Vec::with_capacity(64);
            for prior in priors {
                value.extend_from_slice(prior.as_bytes());
                value.extend_from_slice(b", ");
            }
            use std::io::Write;
            let _ = write!(value, "{client}");
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
        }
    };
    if let Ok(v) = value {
        h.insert(&X_FORWARDED_FOR, v);
    }
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    h.insert(&X_FORWARDED_PORT, port_value(port));
}

/// The X-Forwarded-Port value, kept per thread for the last port seen: a
/// listener's requests share one value (a reference count, not an
/// allocation and a formatted number each).
fn port_value(port: u16) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u16, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((p, v)) if *p == port => v.clone(),
            _ => {
                let v = HeaderValue::from(port);
                *last = Some((port, v.clone()));
                v
            }
        }
    })
}

/// Writes `n` in decimal at the start of `out`; returns how many bytes.
fn write_decimal(out: &mut [u8], n: u8) -> usize {
    let digits = [n / 100, n / 10 % 10, n % 10];
    let skip = if n >= 100 {
        0
    } else if n >= 10 {
        1
    } else {
        2
    };
    for (i, d) in digits[skip..].iter().enumerate() {
        out[i] = b'0' + d;
    }
    3 - skip
}

/// Sets X-Request-Id to an id unique within this process and unlikely to
/// repeat across restarts: a random prefix per worker thread and that
/// thread's counter (no counter shared between cores). A client's own id
/// is replaced unless `keep_client_id` (`trust_request_id`).
pub fn set_request_id(h: &mut HeaderMap, keep_client_id: bool) {
    if keep_client_id && h.contains_key(&X_REQUEST_ID) {
        return;
    }
    thread_local! {
        static NEXT: std::cell::Cell<(u64, u64)> =
            std::cell::Cell::new((fastrand::u64(..), 0));
    }
    let (prefix, n) = NEXT.with(|c| {
        let (prefix, n) = c.get();
        c.set((prefix, n.wrapping_add(1)));
        (prefix, n)
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [b'-'; 33];
    for (i, word) in [prefix, n].into_iter().enumerate() {
        for d in 0..16 {
            id[i * 17 + d] = HEX[((word >> (60 - 4 * d)) & 0xf) as usize];
        }
    }
    if let Ok(v) = HeaderValue::from_bytes(&id) {
        h.insert(&X_REQUEST_ID, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrades_keep_upgrade_and_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, x-private"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-private", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert!(!h.contains_key("x-private"), "{h:?}");
    }

    #[test]
    fn connection_naming_host_never_removes_host() {
        for keep_upgrade in [false, true] {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONNECTION,
                HeaderValue::from_static("Host, upgrade, close"),
            );
            h.insert(header::HOST, HeaderValue::from_static("a.example"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            strip_hop_by_hop(&mut h, keep_upgrade);
            assert_eq!(h[header::HOST], "a.example");
            assert_eq!(h.contains_key(header::UPGRADE), keep_upgrade);
        }
    }

    #[test]
    fn forwarded_for_appends_and_maps_v4_in_v6() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        add_forwarded(&mut h, "::ffff:10.0.0.5".parse().unwrap(), "http", 80);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.1, 198.51.100.2, 10.0.0.5");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "10.200.0.9".parse().unwrap(), "http", 80);
        assert_eq!(h[&X_FORWARDED_FOR], "10.200.0.9");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "192.0.100.255".parse().unwrap(), "http", 80);
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.100.255");
        add_forwarded(&mut h, "0.1.10.99".parse().unwrap(), "https", 8443);
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.100.255, 0.1.10.99");
        assert_eq!(h[&X_FORWARDED_PORT], "8443");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "fd00:231::7".parse().unwrap(), "http", 80);
        assert_eq!(h[&X_FORWARDED_FOR], "fd00:231::7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_PORT], "80");
    }

    #[test]
    fn request_ids_are_added_once_differ_and_replace_a_clients_unless_trusted() {
        let mut a = HeaderMap::new();
        set_request_id(&mut a, false);
        let mut b = HeaderMap::new();
        set_request_id(&mut b, false);
        assert_ne!(a[&X_REQUEST_ID], b[&X_REQUEST_ID]);
        let id = a[&X_REQUEST_ID].to_str().unwrap();
        assert_eq!(id.len(), 33);
        assert_eq!(id.as_bytes()[16], b'-');
        assert!(id.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
        let mut c = HeaderMap::new();
        c.insert(&X_REQUEST_ID, HeaderValue::from_static("mine"));
        set_request_id(&mut c, true);
        assert_eq!(c[&X_REQUEST_ID], "mine", "kept when trusted");
        set_request_id(&mut c, false);
        assert_ne!(c[&X_REQUEST_ID], "mine", "replaced otherwise");
        assert_eq!(c.get_all(&X_REQUEST_ID).iter().count(), 1);
    }
}
