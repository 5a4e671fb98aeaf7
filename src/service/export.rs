//! Export: every row of a tenant list that matches its filters, walked newest first in keyset
//! batches read one at a time, as the consumer asks for them, through the tenant door.
//!
//! Nothing is collected: a batch is read when the previous one has been handed on, so memory
//! holds one batch however many rows match, and a consumer that stops asking (a client that
//! went away drops the stream) stops the walk. Rows created after the walk began are newer than
//! its first batch and are not part of it; rows deleted meanwhile are skipped.

use chrono::{DateTime, Utc};
use futures_util::stream::{self, Stream};
use sea_orm::{ColumnTrait, Condition};
use uuid::Uuid;

use super::pagination::PageRequest;
use super::tenancy::Tenant;
use super::tenant_scope::{page_for, TenantScoped};
use super::ServiceError;
use crate::db::Pool;

/// Rows per statement of a walk: the lists' largest page.
pub const BATCH_ROWS: u64 = super::pagination::MAX_LIMIT;

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

/// The tenant's rows of `E` that meet `condition`, newest first, in batches of [`BATCH_ROWS`]
/// (the last may be shorter or empty). A stranger's first batch is the list's 403.
pub fn batches<E>(
    db: Pool,
    tenant: Tenant,
    condition: Condition,
) -> impl Stream<Item = Result<Vec<E::Model>, ServiceError>> + Send + 'static
where
    E: TenantScoped,
    E::Model: Send,
{
    stream::try_unfold(Walk::Start, move |walk| {
        let (db, condition) = (db.clone(), condition.clone());
        async move {
            let after = match walk {
                Walk::Start => None,
                Walk::After(id) => Some(id),
                Walk::End => return Ok(None),
            };
            let page = PageRequest {
                limit: BATCH_ROWS,
                after,
            };
            let page = page_for::<E>(&db, &tenant, condition, page).await?;
            let walk = page.next.map_or(Walk::End, Walk::After);
            Ok(Some((page.items, walk)))
        }
    })
}
