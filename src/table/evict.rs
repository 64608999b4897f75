//! The eviction guard: a table does not open on a server whose `maxmemory-policy` can evict
//! its keys, since an evicted bucket's rows come back as fresh initial values, silently. When
//! `rde_allow_eviction` accepts such a server, the evictions it makes are counted from then on
//! (`Evictions`, the table statistic `evicted_keys`).

use crate::cluster::route::Router;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::stats::{self, Counter};

/// Whether `policy` can evict the table's keys: every `allkeys-*` policy, and the
/// `volatile-*` ones when the keys carry an expiry (`keys_expire`).
pub(super) fn can_evict(policy: &str, keys_expire: bool) -> bool {
    policy.starts_with("allkeys-") || (keys_expire && policy.starts_with("volatile-"))
}

/// The servers a table was allowed to open on although they can evict its rows, with their
/// `evicted_keys` when it opened.
#[derive(Debug, Default)]
pub(super) struct Evictions {
    watched: Vec<(String, u64)>,
}

impl Evictions {
    /// Keys those servers evicted since the table opened (server-wide figures: any key they
    /// evicted counts, the table's or not). A server that does not answer is left out, with a
    /// debug line: statistics never fail.
    pub(super) fn seen(&self, router: &Router) -> u64 {
        self.watched
            .iter()
            .map(
                |(addr, at_open)| match router.info_field(addr, "stats", "evicted_keys") {
                    Ok(now) => now.unwrap_or(0).saturating_sub(*at_open),
                    Err(e) => {
                        log::debug!("evicted_keys of {addr} not read: {e}");
                        0
                    }
                },
            )
            .sum()
    }
}

/// Reads `maxmemory-policy` from every master the table's data lives on and fails if one can
/// evict its keys, unless `rde_allow_eviction` accepts it (a warning, counted, and the
/// server's evictions watched from now on). A server that answers `CONFIG GET` with an error
/// reply (an ACL without `CONFIG`, a renamed command) is skipped with a debug line.
pub(super) fn check(cfg: &Config, router: &Router, table: &str) -> Result<Evictions> {
    let keys_expire = cfg.expire_model_tag_in_seconds > 0;
    let mut evictions = Evictions::default();
    for addr in router.masters() {
        let policy = match router.config_get(&addr, "maxmemory-policy") {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) if e.server().is_some() => {
                log::debug!(
                    "table {table:?}: eviction guard skipped on {addr}, which did not answer CONFIG GET maxmemory-policy: {e}"
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        if !can_evict(&policy, keys_expire) {
            continue;
        }
        let why = if policy.starts_with("volatile-") {
            " (they carry a TTL: expire_model_tag_in_seconds > 0)"
        } else {
            ""
        };
        if cfg.rde_allow_eviction {
            stats::add(Counter::EvictingOpensAllowed, 1);
            log::warn!(
                "table {table:?}: redis {addr} has maxmemory-policy {policy}, which can evict its rows{why}; opened because rde_allow_eviction is true"
            );
            let at_open = router.info_field(&addr, "stats", "evicted_keys")?;
            evictions.watched.push((addr, at_open.unwrap_or(0)));
            continue;
        }
        stats::add(Counter::EvictingOpensRefused, 1);
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "redis {addr} has maxmemory-policy {policy}, which can evict this table's rows{why}: \
                 evicted rows silently come back as fresh initial values. Set \
                 `maxmemory-policy noeviction` on the server (CONFIG SET and redis.conf), or set \
                 \"rde_allow_eviction\": true in the JSON config to accept losing rows"
            ),
        ));
    }
    Ok(evictions)
}

#[cfg(test)]
mod tests {
    use super::can_evict;

    #[test]
    fn each_policy_family_is_classified() {
        for p in ["allkeys-lru", "allkeys-lfu", "allkeys-random"] {
            assert!(can_evict(p, false) && can_evict(p, true), "{p}");
        }
        for p in [
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert!(!can_evict(p, false) && can_evict(p, true), "{p}");
        }
        assert!(!can_evict("noeviction", true) && !can_evict("noeviction", false));
    }
}
