//! Who the client is, by address, and how many things one address holds.
//!
//! The client's address is the TCP peer's, unless the peer is one of the
//! configured trusted proxies (`server.trusted_proxies`). Then it comes from
//! `X-Forwarded-For`: the right-most address of the chain that is not itself
//! a trusted proxy. Everything left of it was written by the client and is
//! ignored, so a client cannot pick its own address; an untrusted peer's
//! `X-Forwarded-For` is ignored entirely. A hop that is not an address
//! (`unknown`, garbage, a non-ASCII header) ends the walk, and the client is
//! the last trusted hop seen, which fails closed: such clients share that
//! proxy's address and its limits.
//!
//! [`PerAddress`] counts what each address holds open: the listener caps TCP
//! connections per peer with it, the socket route caps WebSockets per client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address of a request on the public listener (set by the
/// public router's middleware from the peer and `X-Forwarded-For`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client's address of a request that came from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    // The last header's last hop was appended by the peer itself: walk from
    // there to the left, lazily (only trusted hops are passed over).
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(list) = value.to_str() else {
            return client;
        };
        for hop in list.rsplit(',') {
            match parse_hop(hop.trim()) {
                Some(ip) if is_trusted(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

/// Open things (connections, sockets) per address, each address at most `max`.
pub struct PerAddress {
    max: usize,
    /// Addresses never counted (the trusted proxies, for TCP connections).
    exempt: Vec<IpAddr>,
    /// A std mutex: held for a map update only, never across an await.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    pub fn new(max: usize, exempt: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(PerAddress {
            max,
            exempt: exempt.into_iter().map(|ip| ip.to_canonical()).collect(),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more for `ip`, or `None` when `ip` is at its cap. The
    /// count goes down when the slot is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = ip.to_canonical();
        if self.exempt.contains(&ip) {
            return Some(AddressSlot { owner: None, ip });
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: Some(self.clone()),
            ip,
        })
    }
}

/// One counted thing of an address; uncounted on drop.
pub struct AddressSlot {
    owner: Option<Arc<PerAddress>>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            let mut open = owner.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn an_untrusted_peers_forwarded_for_is_ignored() {
        let trusted = [ip("10.0.0.1")];
        let peer = ip("198.51.100.7");
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9"]), &trusted), peer);
        assert_eq!(client_ip(peer, &xff(&["10.0.0.1"]), &trusted), peer);
    }

    #[test]
    fn a_trusted_proxy_gives_the_right_most_untrusted_hop() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let proxy = ip("10.0.0.1");
        // The client wrote the left part; the proxies appended the rest.
        let chain = xff(&["1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(client_ip(proxy, &chain, &trusted), ip("203.0.113.9"));
        // The same across several headers.
        let split = xff(&["1.1.1.1", "203.0.113.9", "10.0.0.2"]);
        assert_eq!(client_ip(proxy, &split, &trusted), ip("203.0.113.9"));
        // With ports and IPv6.
        let ported = xff(&["[2001:db8::7]:4711"]);
        assert_eq!(client_ip(proxy, &ported, &trusted), ip("2001:db8::7"));
        assert_eq!(
            client_ip(proxy, &xff(&["203.0.113.9:80"]), &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_chain_is_the_client() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let proxy = ip("10.0.0.1");
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        // Garbage ends the walk at the last trusted hop, never left of it.
        assert_eq!(
            client_ip(proxy, &xff(&["203.0.113.9, unknown, 10.0.0.2"]), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(client_ip(proxy, &xff(&["203.0.113.9, "]), &trusted), proxy);
        let mut opaque = HeaderMap::new();
        opaque.append(
            X_FORWARDED_FOR,
            axum::http::HeaderValue::from_bytes(b"203.0.113.9, \xff").unwrap(),
        );
        assert_eq!(client_ip(proxy, &opaque, &trusted), proxy);
        // Only trusted hops: the left-most of them.
        assert_eq!(
            client_ip(proxy, &xff(&["10.0.0.2, 10.0.0.1"]), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_the_same_address() {
        let trusted = [ip("10.0.0.1")];
        let mapped = ip("::ffff:10.0.0.1");
        assert_eq!(
            client_ip(mapped, &xff(&["::ffff:203.0.113.9"]), &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn an_address_holds_at_most_its_cap_and_exempt_ones_are_not_counted() {
        let per = PerAddress::new(2, vec![ip("10.0.0.1")]);
        let a = per.admit(ip("192.0.2.1")).unwrap();
        let _b = per.admit(ip("192.0.2.1")).unwrap();
        assert!(per.admit(ip("192.0.2.1")).is_none());
        assert!(per.admit(ip("192.0.2.2")).is_some());
        drop(a);
        assert!(per.admit(ip("192.0.2.1")).is_some());
        let exempt: Vec<_> = (0..5).map(|_| per.admit(ip("10.0.0.1"))).collect();
        assert!(exempt.iter().all(Option::is_some));
        assert!(per.open.lock().unwrap().get(&ip("10.0.0.1")).is_none());
    }
}
