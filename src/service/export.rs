//! Export: every row of a tenant list that matches its filters, walked newest first in keyset
//! batches read one at a time, as the consumer asks for them, through the tenant door.
//!
//! Nothing is collected: a batch is read when the previous one has been handed on, so memory
//! holds one batch however many rows match, and a consumer that stops asking (a client that
//! went away drops the stream) stops the walk. Rows created after the walk began are newer than
//! its first batch and are not part of it; rows deleted meanwhile are skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, Stream};
use sea_orm::{ColumnTrait, Condition};
use uuid::Uuid;

use super::pagination::PageRequest;
use super::tenancy::Tenant;
use super::tenant_scope::{page_for, TenantScoped};
use super::ServiceError;
use crate::db::Pool;

/// The most rows per statement of a walk: the lists' largest page.
pub const BATCH_ROWS: u64 = super::pagination::MAX_LIMIT;
/// The fewest: a walk starts there, before it knows how large the rows are.
pub const MIN_BATCH_ROWS: u64 = 10;
/// What a batch should weigh once written: its rows per statement follow from the rows seen.
const BATCH_BYTES: u64 = 4 << 20;

/// The rows of a walk's next statement, set by the writer from the size of what it wrote: rows
/// of a few hundred bytes go a thousand at a time, rows near the body limit ten at a time, so
/// that memory holds about [`BATCH_BYTES`] of rows however large a tenant made them.
#[derive(Clone, Debug)]
pub struct BatchSize(Arc<AtomicU64>);

impl Default for BatchSize {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(MIN_BATCH_ROWS)))
    }
}

impl BatchSize {
    /// The rows of the next statement.
    pub fn rows(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// `rows` rows were written in `bytes`.
    pub fn observe(&self, rows: u64, bytes: u64) {
        if let Some(per_row) = bytes.checked_div(rows) {
            let next = (BATCH_BYTES / per_row.max(1)).clamp(MIN_BATCH_ROWS, BATCH_ROWS);
            self.0.store(next, Ordering::Relaxed);
        }
    }
}

/// The creation window of an export: `createdAfter` (inclusive) to `createdBefore`
/// (exclusive), each open when absent, so that consecutive windows neither overlap nor leave a
/// gap.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreatedWindow {
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

impl CreatedWindow {
    /// The window as a condition on `created_at`.
    pub fn condition(&self, created_at: impl ColumnTrait) -> Condition {
        Condition::all()
            .add_option(self.after.map(|at| created_at.gte(at)))
            .add_option(self.before.map(|at| created_at.lt(at)))
    }
}

/// Where a walk stands.
enum Walk {
    Start,
    After(Uuid),
    End,
}

/// The tenant's rows of `E` that meet `condition`, newest first, in batches of `size` rows (the
/// last may be shorter or empty). A stranger's first batch is the list's 403.
pub fn batches<E>(
    db: Pool,
    tenant: Tenant,
    condition: Condition,
    size: BatchSize,
) -> impl Stream<Item = Result<Vec<E::Model>, ServiceError>> + Send + 'static
where
    E: TenantScoped,
    E::Model: Send,
{
    stream::try_unfold(Walk::Start, move |walk| {
        let (db, condition, limit) = (db.clone(), condition.clone(), size.rows());
        async move {
            let after = match walk {
                Walk::Start => None,
                Walk::After(id) => Some(id),
                Walk::End => return Ok(None),
            };
            let page = PageRequest { limit, after };
            let page = page_for::<E>(&db, &tenant, condition, page).await?;
            let walk = page.next.map_or(Walk::End, Walk::After);
            Ok(Some((page.items, walk)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_starts_small_and_sizes_its_batches_by_the_bytes_of_its_rows() {
        let size = BatchSize::default();
        assert_eq!(size.rows(), MIN_BATCH_ROWS);
        size.observe(10, 4_500);
        assert_eq!(
            size.rows(),
            BATCH_ROWS,
            "small rows: the lists' largest page"
        );
        size.observe(1000, 1000 * 100_000);
        assert_eq!(
            size.rows(),
            BATCH_BYTES / 100_000,
            "rows of 100 kB: about 4 MiB a batch"
        );
        size.observe(41, 41 << 20);
        assert_eq!(
            size.rows(),
            MIN_BATCH_ROWS,
            "rows of a MiB: never fewer than ten"
        );
        size.observe(0, 0);
        assert_eq!(size.rows(), MIN_BATCH_ROWS, "an empty batch tells nothing");
    }
}
