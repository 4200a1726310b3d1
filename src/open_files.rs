//! The open-files limit: every TCP, TLS, WS or WSS connection is a file descriptor, and a
//! shell's default soft limit (often 1,024) would refuse clients long before
//! `-max-connections`. Like the original Go program (whose runtime does this at start),
//! Roundabout raises its soft limit to the hard one, and says in its banner what it got.

/// File descriptors kept aside for listeners, outbound connections, the runtime and logs
/// when comparing the limit with `-max-connections`.
pub const RESERVED: u64 = 100;

/// What the process may open, after [`raise_to_hard_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit now in force.
    pub limit: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped by the kernel's `nr_open`).
pub fn raise_to_hard_limit() -> std::io::Result<OpenFiles> {
    let (before, _) = rlimit::Resource::NOFILE.get()?;
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(OpenFiles {
        limit,
        raised_from: (limit > before).then_some(before),
    })
}

/// The banner's warning when `-max-connections` cannot be reached under `limit`
/// (`max_connections` 0 means no cap: the limit is then the operator's choice).
pub fn max_connections_warning(limit: u64, max_connections: usize) -> Option<String> {
    let usable = limit.saturating_sub(RESERVED);
    (max_connections as u64 > usable).then(|| {
        format!(
            "-max-connections {max_connections} is above what the open-files limit ({limit}) \
             allows: connections beyond about {usable} will be refused by the system; \
             raise the limit (systemd LimitNOFILE=, ulimit -n) or lower -max-connections"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_the_cap_is_out_of_reach() {
        assert_eq!(max_connections_warning(1_048_576, 50_000), None);
        assert_eq!(max_connections_warning(20_000, 0), None);
        assert_eq!(max_connections_warning(20_000, 19_900), None);
        let w = max_connections_warning(20_000, 50_000).unwrap();
        assert!(w.contains("-max-connections 50000"), "{w}");
        assert!(w.contains("about 19900"), "{w}");
        // a limit below the reserve leaves no room for any accepted connection
        assert!(max_connections_warning(50, 1).is_some());
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        let got = raise_to_hard_limit().unwrap();
        assert!(
            got.limit >= soft && got.limit <= hard,
            "{got:?} from {soft}/{hard}"
        );
        assert_eq!(rlimit::Resource::NOFILE.get().unwrap().0, got.limit);
    }
}
