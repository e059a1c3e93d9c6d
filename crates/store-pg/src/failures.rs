//! A run's failures on PostgreSQL, as the SQLite store's `store_failures`
//! (counting.rs): replaced as a whole; a fingerprint is stored with its
//! first occurrence and counted new once; a failure class counts once per
//! run, so a replay or an update never counts twice.
//!
//! Replicas: a fingerprint's row is shared by every run that shows it. The
//! run's fingerprints are locked before any is written, in hash order, and
//! new ones are created under one lock (`concurrent::lock_new_fingerprints`)
//! taken before that, so writers wait for each other in one order.

use crate::statements::Sql;
use crate::tally;
use ci_slo_core::catalog;
use ci_slo_core::classify::normalize_fingerprint;
use ci_slo_core::model::FailureEvidence;

pub(crate) fn store_failures(
    tx: &mut impl Sql,
    run_id: i64,
    repository: &str,
    failures: &[FailureEvidence],
    event_ms: i64,
    live: bool,
) -> Result<(), postgres::Error> {
    let mut counted: Vec<String> = tx
        .query(
            "SELECT DISTINCT class FROM failures WHERE run_id = $1",
            &[&run_id],
        )?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute("DELETE FROM failures WHERE run_id = $1", &[&run_id])?;
    lock_fingerprints(tx, failures)?;
    for f in failures {
        let mut fingerprint_id: Option<i64> = None;
        let mut is_new = false;
        if let Some(hash) = &f.fingerprint {
            // An update first: an insert that meets the hash's row would
            // still take a number of the id sequence, and ids would no
            // longer be SQLite's (1, 2, 3, ... in order of first sight).
            // The insert's own conflict clause is for a replica storing
            // the same new fingerprint at once.
            let updated = tx.query_opt(
                "UPDATE fingerprints SET first_seen = least(first_seen, $2),
                    last_seen = greatest(last_seen, $2), occurrences = occurrences + 1
                 WHERE hash = $1 RETURNING id, occurrences",
                &[hash, &event_ms],
            )?;
            let row = match updated {
                Some(row) => row,
                None => tx.query_one(
                "INSERT INTO fingerprints AS p (hash, normalized, first_seen, last_seen, occurrences)
                 VALUES ($1, $2, $3, $3, 1)
                 ON CONFLICT (hash) DO UPDATE SET first_seen = least(p.first_seen, excluded.first_seen),
                    last_seen = greatest(p.last_seen, excluded.last_seen), occurrences = p.occurrences + 1
                 RETURNING id, occurrences",
                &[hash, &normalize_fingerprint(&f.evidence), &event_ms],
            )?,
            };
            is_new = row.get::<_, i64>(1) == 1;
            if is_new && live {
                tally::inc(
                    tx,
                    catalog::FINGERPRINTS_NEW,
                    &[("repository", repository)],
                    1.0,
                )?;
            }
            fingerprint_id = Some(row.get(0));
        }
        let context = serde_json::to_string(&f.context).unwrap_or_else(|_| "[]".into());
        let candidates = (!f.candidates.is_empty())
            .then(|| serde_json::to_string(&f.candidates).unwrap_or_else(|_| "[]".into()));
        tx.execute(
            "INSERT INTO failures (run_id, test_name, class, category, line, evidence, context, fingerprint_id,
                is_new, context_before, candidates)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &run_id,
                &f.test_name,
                &f.class,
                &f.category,
                &f.line.map(|l| l as i64),
                &f.evidence,
                &context,
                &fingerprint_id,
                &i64::from(is_new),
                &f.context_before.map(i64::from),
                &candidates,
            ],
        )?;
        if !counted.contains(&f.class) {
            counted.push(f.class.clone());
            if live {
                tally::inc(
                    tx,
                    catalog::FAILURES,
                    &[
                        ("repository", repository),
                        ("class", &f.class),
                        ("category", &f.category),
                    ],
                    1.0,
                )?;
            }
        }
    }
    Ok(())
}

/// Lock the rows of the fingerprints `failures` show, in hash order, after
/// taking the lock for creating fingerprints when some are new.
fn lock_fingerprints(
    tx: &mut impl Sql,
    failures: &[FailureEvidence],
) -> Result<(), postgres::Error> {
    let mut hashes: Vec<&str> = failures
        .iter()
        .filter_map(|f| f.fingerprint.as_deref())
        .collect();
    if hashes.is_empty() {
        return Ok(());
    }
    hashes.sort_unstable();
    hashes.dedup();
    let known: i64 = tx
        .query_one(
            "SELECT count(*) FROM fingerprints WHERE hash = ANY($1)",
            &[&hashes],
        )?
        .get(0);
    if known < hashes.len() as i64 {
        crate::concurrent::lock_new_fingerprints(tx)?;
    }
    if known > 0 {
        tx.execute(
            "SELECT 1 FROM fingerprints WHERE hash = ANY($1) ORDER BY hash FOR UPDATE",
            &[&hashes],
        )?;
    }
    Ok(())
}
