//! Sharding repositories across exporter instances (docs/scaling.md).
//!
//! `shard = "i/n"` in the config makes this instance shard `i` of `n`
//! (1-based: `1/2` and `2/2` are the two halves). A shard owns a repository
//! when [`owner_of`] names it: the 64-bit FNV-1a hash of the repository's full
//! path (`owner/name`, `group/sub/project`, exactly as stored and exported in
//! the `repository` label: UTF-8, case-sensitive, without the forge), mapped
//! to one of `n` buckets by jump consistent hashing (Lamping and Veach, 2014),
//! plus 1. Both are fixed arithmetic with no key, no platform dependence and
//! no randomness, so the assignment is the same on every machine and in every
//! version; changing it would move repositories between shards, so it is
//! pinned by tests (docs/scaling.md has the same in a few lines of Python).
//!
//! Why not `hash % n`: FNV-1a's low bits are weak (its lowest bit is the
//! parity of the bytes' lowest bits, so similar names split unevenly over an
//! even `n`), and with `% n` going from `n` to `n + 1` shards moves almost
//! every repository; jump hashing moves only the `1/(n+1)` that the new shard
//! takes over.
//!
//! Hashing the path alone keeps every series of one `repository` label value
//! on one shard, which is what makes the shards' counters add up to one
//! instance's.
//!
//! Data that arrives at a shard for a repository it does not own is, for the
//! webhooks and the ingest API, forwarded to the owner when `shard_urls` lists
//! the shards (`http::forward::ShardRouter`), or refused with `421 Misdirected Request`
//! naming the owner. Pollers, backfills, the importer, the CLI ingest and the
//! demo skip (or refuse) repositories they do not own.

use serde::{Deserialize, Serialize};
use std::fmt;

/// This instance's part of the repositories: shard `index` of `count` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl Shard {
    /// Not sharded: one instance owns every repository.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || index == 0 || index > count {
            return Err(format!(
                "{index}/{count} is not a shard: expected \"i/n\" with 1 <= i <= n (1-based), e.g. \"1/2\""
            ));
        }
        if count > 1024 {
            return Err(format!("{count} shards: at most 1024"));
        }
        Ok(Shard { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// Whether this shard owns `repository` (its full path).
    pub fn owns(&self, repository: &str) -> bool {
        owner_of(repository, self.count) == self.index
    }

    /// The shard (of the same count) that owns `repository`.
    pub fn owner(&self, repository: &str) -> Shard {
        Shard {
            index: owner_of(repository, self.count),
            count: self.count,
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || {
            format!(
                "{s:?} is not a shard: expected \"i/n\" with 1 <= i <= n (1-based), e.g. \"1/2\""
            )
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let i: u32 = i.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n).map_err(|_| bad())
    }
}

impl TryFrom<String> for Shard {
    type Error = String;
    fn try_from(s: String) -> Result<Shard, String> {
        s.parse()
    }
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        s.to_string()
    }
}

/// FNV-1a, 64 bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash: the bucket in `0..buckets` of `key`.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// The 1-based shard of `count` that owns `repository`:
/// `jump_hash(fnv1a64(utf8(repository)), count) + 1`.
pub fn owner_of(repository: &str, count: u32) -> u32 {
    if count <= 1 {
        return 1;
    }
    jump_hash(fnv1a64(repository.as_bytes()), count) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn the_assignment_of_repositories_is_pinned() {
        // Changing these moves repositories between shards of existing
        // deployments (the values agree with the Python in docs/scaling.md).
        assert_eq!(fnv1a64(b"cockpit-project/cockpit"), 0xe253ce0e30f7ec74);
        let pinned = [
            ("cockpit-project/cockpit", [1, 3, 4]),
            ("acme/web-shop", [2, 2, 2]),
            ("platform/infra/terraform-modules", [1, 1, 1]),
            ("jenkins/nightly-suite", [1, 1, 1]),
        ];
        for (repo, owners) in pinned {
            for (n, want) in [2, 3, 4].into_iter().zip(owners) {
                assert_eq!(owner_of(repo, n), want, "{repo} of {n}");
            }
        }
        assert_eq!(owner_of("anything", 1), 1);
    }

    #[test]
    fn every_repository_has_exactly_one_owner_and_the_split_is_even() {
        for n in 1..=7u32 {
            let shards: Vec<Shard> = (1..=n).map(|i| Shard::new(i, n).unwrap()).collect();
            let mut per_shard = vec![0usize; n as usize];
            for k in 0..7000 {
                let repo = format!("org-{}/repo-{k}", k % 13);
                let owners: Vec<&Shard> = shards.iter().filter(|s| s.owns(&repo)).collect();
                assert_eq!(owners.len(), 1, "{repo} in {n} shards");
                assert_eq!(*owners[0], shards[0].owner(&repo));
                per_shard[owners[0].index() as usize - 1] += 1;
            }
            let fair = 7000 / n as usize;
            for c in per_shard {
                assert!(
                    c > fair * 9 / 10 && c < fair * 11 / 10,
                    "{n} shards: {c} vs {fair}"
                );
            }
        }
    }

    #[test]
    fn growing_by_one_shard_moves_only_what_the_new_shard_takes_over() {
        let repos: Vec<String> = (0..6000)
            .map(|k| format!("org-{}/repo-{k}", k % 17))
            .collect();
        for n in 1..=6u32 {
            let moved: Vec<&String> = repos
                .iter()
                .filter(|r| owner_of(r, n) != owner_of(r, n + 1))
                .collect();
            // Every moved repository moves to the new shard, and about 1/(n+1) move.
            assert!(moved.iter().all(|r| owner_of(r, n + 1) == n + 1), "{n}");
            let share = moved.len() as f64 / repos.len() as f64;
            let want = 1.0 / f64::from(n + 1);
            assert!(
                (share - want).abs() < want * 0.1,
                "{n} -> {}: {share}",
                n + 1
            );
        }
    }

    #[test]
    fn shards_parse_one_based_and_refuse_the_rest() {
        assert_eq!("1/2".parse::<Shard>().unwrap(), Shard::new(1, 2).unwrap());
        assert_eq!(" 2 / 2 ".parse::<Shard>().unwrap().to_string(), "2/2");
        assert_eq!(Shard::default(), Shard::ALL);
        assert!(!Shard::ALL.is_sharded());
        for bad in [
            "0/2", "3/2", "1/0", "2", "a/b", "-1/2", "", "1/2/3", "1/5000",
        ] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?}");
        }
    }
}
