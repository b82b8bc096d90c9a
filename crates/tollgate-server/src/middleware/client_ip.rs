//! The source address of a request, resolved once per request by [`resolve`]: the socket peer, or, only when the
//! peer is a trusted proxy, the rightmost `X-Forwarded-For` address that is not itself trusted. `Forwarded` and
//! `X-Real-IP` are never read.
//!
//! It fails closed: a trusted proxy's header that cannot be read makes the source [`SourceIp::Unknown`], which no
//! allow-list contains, and a request without its socket peer is a server wiring bug (500), never a default address.

use crate::app::AppState;
use crate::error::ApiError;
use crate::middleware::access_log::AccessRecord;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The only forwarding header read.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Where a request came from, as far as it can be believed; in the request's extensions once [`resolve`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceIp {
    /// The address API.md's rule gives, IPv4-mapped IPv6 addresses written as IPv4.
    Known(IpAddr),
    /// A trusted proxy sent an `X-Forwarded-For` that cannot be read where it matters: nobody's address.
    Unknown,
}

impl SourceIp {
    /// Whether the source lies in one of `nets`. An unknown source lies in none, not even `0.0.0.0/0`.
    pub fn is_in(self, nets: &[IpNet]) -> bool {
        match self {
            Self::Known(ip) => nets.iter().any(|net| net.contains(&ip)),
            Self::Unknown => false,
        }
    }
}

impl fmt::Display for SourceIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(ip) => ip.fmt(f),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The source of a request from `peer` with `headers`, as API.md defines it.
pub fn source_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> SourceIp {
    // `::ffff:a.b.c.d` is a.b.c.d on a dual-stack socket; IPv4 networks must match it.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return SourceIp::Known(peer);
    }
    // Right to left: each trusted proxy appended the address it saw, so the first untrusted entry from the right is
    // the client as our proxies saw it, and everything left of it is the client's to forge (and is never read).
    // Several header lines are one list, in order.
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        // Not visible ASCII: we cannot tell which address a proxy meant.
        let Ok(line) = line.to_str() else {
            return SourceIp::Unknown;
        };
        for hop in line.rsplit(',') {
            match hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if is_trusted(&ip) => {}
                Ok(ip) => return SourceIp::Known(ip),
                // A hop our own proxies vouch for that is not an address: the chain is broken, so the client is
                // unknown (falling back to the proxy's own address would let it pass the proxy's allow-lists).
                Err(_) => return SourceIp::Unknown,
            }
        }
    }
    // Only trusted hops (or none): the request comes from our own side.
    SourceIp::Known(peer)
}

/// Resolves `request`'s source address into its extensions (and its access record), or refuses it: a request
/// without its socket peer is a server wiring bug.
pub fn resolve(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        // The router was served without `into_make_service_with_connect_info`: fail every request loudly rather
        // than give every client one made-up address.
        return Err(ApiError::Internal(
            "the request has no peer address (ConnectInfo)".to_owned(),
        ));
    };
    let source = source_ip(peer.ip(), request.headers(), &state.config.trusted_proxies);
    if let Some(record) = request.extensions().get::<AccessRecord>() {
        record.record_source(source);
    }
    request.extensions_mut().insert(source);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn known(s: &str) -> SourceIp {
        SourceIp::Known(ip(s))
    }

    fn headers(lines: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", HeaderValue::from_bytes(line).unwrap());
        }
        h
    }

    fn trusted() -> Vec<IpNet> {
        vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let trusted = trusted();
        let proxy = ip("127.0.0.1");
        let stranger = ip("198.51.100.7");
        let h = headers(&[b"203.0.113.9, 10.1.1.1"]);
        assert_eq!(source_ip(proxy, &h, &trusted), known("203.0.113.9"));
        assert_eq!(source_ip(stranger, &h, &trusted), known("198.51.100.7"));
        assert_eq!(
            source_ip(proxy, &HeaderMap::new(), &trusted),
            known("127.0.0.1")
        );
        // Only trusted hops: the request comes from our side.
        assert_eq!(
            source_ip(proxy, &headers(&[b"10.0.0.3"]), &trusted),
            known("127.0.0.1")
        );
        // A spoofed leftmost entry is ignored: the rightmost untrusted one wins.
        let h = headers(&[b"1.2.3.4, 203.0.113.9"]);
        assert_eq!(source_ip(proxy, &h, &trusted), known("203.0.113.9"));
        // Several lines are one list, in order.
        let h = headers(&[b"1.2.3.4", b"203.0.113.9, 10.0.0.2"]);
        assert_eq!(source_ip(proxy, &h, &trusted), known("203.0.113.9"));
    }

    #[test]
    fn an_unreadable_header_from_a_trusted_peer_makes_the_source_unknown() {
        let trusted = trusted();
        let proxy = ip("127.0.0.1");
        for bad in [
            &b"garbage"[..],
            b"203.0.113.9\xff",
            b"\xc3\xbcnicode, 203.0.113.9\xff",
            "203.0.113.9, ü".as_bytes(),
            b"",
            b"203.0.113.9, ",
            b"203.0.113.9:443",
            // Unparsable to the right of trusted hops: still inside what we read.
            b"garbage, 10.1.1.1",
        ] {
            assert_eq!(
                source_ip(proxy, &headers(&[bad]), &trusted),
                SourceIp::Unknown,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // An unreadable later line comes first, right to left.
        let h = headers(&[b"203.0.113.9", b"10.0.0.2, \xff"]);
        assert_eq!(source_ip(proxy, &h, &trusted), SourceIp::Unknown);
        // Left of the first untrusted address nothing is read, readable or not.
        let h = headers(&[b"garbage, 203.0.113.9"]);
        assert_eq!(source_ip(proxy, &h, &trusted), known("203.0.113.9"));
        let h = headers(&[b"\xff\xfe", b"203.0.113.9, 10.0.0.2"]);
        assert_eq!(source_ip(proxy, &h, &trusted), known("203.0.113.9"));
        // From an untrusted peer the header is never read at all.
        let stranger = ip("198.51.100.7");
        assert_eq!(
            source_ip(stranger, &headers(&[b"\xff"]), &trusted),
            known("198.51.100.7")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_matched_as_ipv4() {
        let trusted = trusted();
        // A dual-stack listener sees the local proxy as ::ffff:127.0.0.1: still trusted.
        let mapped_proxy = ip("::ffff:127.0.0.1");
        let h = headers(&[b"203.0.113.9"]);
        assert_eq!(source_ip(mapped_proxy, &h, &trusted), known("203.0.113.9"));
        // Mapped hops: trusted ones are skipped, the client is written as IPv4.
        let h = headers(&[b"::ffff:203.0.113.9, ::ffff:10.0.0.2"]);
        let source = source_ip(mapped_proxy, &h, &trusted);
        assert_eq!(source, known("203.0.113.9"));
        assert!(source.is_in(&["203.0.113.0/24".parse().unwrap()]));
        // A mapped untrusted peer too.
        let peer = source_ip(ip("::ffff:198.51.100.7"), &HeaderMap::new(), &trusted);
        assert_eq!(peer, known("198.51.100.7"));
        assert!(peer.is_in(&["198.51.100.0/24".parse().unwrap()]));
        // Real IPv6 stays IPv6.
        assert_eq!(
            source_ip(ip("2001:db8::1"), &HeaderMap::new(), &trusted),
            known("2001:db8::1")
        );
    }

    #[test]
    fn an_unknown_source_is_in_no_network() {
        let everything: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        assert!(!SourceIp::Unknown.is_in(&everything));
        assert!(known("203.0.113.9").is_in(&everything));
        assert_eq!(SourceIp::Unknown.to_string(), "unknown");
    }
}
