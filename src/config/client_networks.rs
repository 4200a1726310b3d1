//! `-trusted-client-ip` / `-trusted-client-mask`: the networks clients may REGISTER from.

use cidr::{IpCidr, IpInet};
use std::net::IpAddr;

/// Turns `192.0.2.35,198.51.100.0/24` into networks. Entries without a prefix take
/// `default_mask`; host bits are cleared (192.0.2.35/24 -> 192.0.2.0/24), as the original did.
pub fn parse_client_networks(value: &str, default_mask: u8) -> Result<Vec<IpCidr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (addr, len) = match entry.split_once('/') {
                Some((a, l)) => (
                    a,
                    l.parse::<u8>().map_err(|_| {
                        format!("-trusted-client-ip '{entry}': bad prefix length '{l}'")
                    })?,
                ),
                None => (entry, default_mask),
            };
            let parsed: IpAddr = addr.parse().map_err(|_| {
                format!("-trusted-client-ip '{entry}': '{addr}' is not an IP address")
            })?;
            // An IPv4-mapped entry (::ffff:192.0.2.0/120) is the IPv4 network: sources are
            // IPv4 addresses, also on a dual-stack `-bind-ip ::` socket.
            let ip = parsed.to_canonical();
            let len = match (parsed, ip) {
                (IpAddr::V6(_), IpAddr::V4(_)) if entry.contains('/') => {
                    len.checked_sub(96).ok_or_else(|| {
                        format!(
                            "-trusted-client-ip '{entry}': an IPv4-mapped network needs a \
                             prefix of at least /96"
                        )
                    })?
                }
                _ => len,
            };
            // An IPv6 entry without its own prefix keeps its full length unless the mask
            // was meant for it; a /24 default would be meaningless for IPv6.
            let len = if ip.is_ipv6() && !entry.contains('/') && len <= 32 {
                128
            } else {
                len
            };
            IpInet::new(ip, len)
                .map(|inet| inet.network())
                .map_err(|_| {
                    format!(
                        "-trusted-client-ip '{entry}': prefix /{len} is too long for this address"
                    )
                })
        })
        .collect()
}

/// Whether `ip` (an IPv4-mapped IPv6 address counting as its IPv4 address) is in one of
/// the networks.
pub fn contains(networks: &[IpCidr], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    networks.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_to_network_address() {
        let n = parse_client_networks("192.0.2.35,198.51.100.7/32,10.1.2.3/8", 24).unwrap();
        let shown: Vec<String> = n.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, vec!["192.0.2.0/24", "198.51.100.7", "10.0.0.0/8"]);
        assert!(contains(&n, "192.0.2.200".parse().unwrap()));
        assert!(!contains(&n, "192.0.3.1".parse().unwrap()));
        assert!(contains(&n, "198.51.100.7".parse().unwrap()));
        assert!(!contains(&n, "198.51.100.8".parse().unwrap()));
    }

    #[test]
    fn host_mask_32() {
        let n = parse_client_networks("192.0.2.35,192.0.2.14", 32).unwrap();
        assert!(contains(&n, "192.0.2.14".parse().unwrap()));
        assert!(!contains(&n, "192.0.2.15".parse().unwrap()));
    }

    #[test]
    fn ipv6_entries() {
        let n = parse_client_networks("2001:db8::1,2001:db8:1::/48", 24).unwrap();
        assert!(contains(&n, "2001:db8::1".parse().unwrap()));
        assert!(!contains(&n, "2001:db8::2".parse().unwrap()));
        assert!(contains(&n, "2001:db8:1:ffff::9".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_entries_and_sources_are_ipv4() {
        let n = parse_client_networks("::ffff:192.0.2.0/120,::ffff:198.51.100.7", 24).unwrap();
        let shown: Vec<String> = n.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, vec!["192.0.2.0/24", "198.51.100.0/24"]);
        assert!(contains(&n, "192.0.2.9".parse().unwrap()));
        assert!(contains(&n, "::ffff:192.0.2.9".parse().unwrap()));
        assert!(!contains(&n, "::ffff:192.0.3.9".parse().unwrap()));
        let v4 = parse_client_networks("192.0.2.0/24", 24).unwrap();
        assert!(contains(&v4, "::ffff:192.0.2.200".parse().unwrap()));
        let e = parse_client_networks("::ffff:192.0.2.0/64", 24).unwrap_err();
        assert!(e.contains("/96"), "{e}");
    }

    #[test]
    fn errors_name_the_entry() {
        let e = parse_client_networks("192.0.2.1,nope", 24).unwrap_err();
        assert!(e.contains("'nope'"), "{e}");
        let e = parse_client_networks("192.0.2.1/33", 24).unwrap_err();
        assert!(e.contains("/33"), "{e}");
        let e = parse_client_networks("192.0.2.1", 40).unwrap_err();
        assert!(e.contains("/40"), "{e}");
    }
}
