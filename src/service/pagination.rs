//! Keyset pagination, newest first.
//!
//! Ids are UUIDv7 and so ordered by creation time; a page is `id < cursor ORDER BY id DESC`.
//! A walk never repeats a row and never skips one that stays in place, whatever is inserted or
//! deleted meanwhile, and each page is one index range scan however deep the walk goes.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

/// The largest page a client may ask for.
pub const MAX_LIMIT: u64 = 1000;
/// The page size when the client does not say.
pub const DEFAULT_LIMIT: u64 = 100;

/// Which page to read: at most `limit` rows older than `after`.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub limit: u64,
    /// The id of the last row of the previous page.
    pub after: Option<Uuid>,
}

/// One page of rows and, when there are more, the id to continue after.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Uuid>,
}

impl<T> Page<T> {
    /// The page of `limit` rows out of `items`, read with one more than `limit` to learn
    /// whether a next page exists.
    pub fn of(mut items: Vec<T>, limit: u64, id_of: impl Fn(&T) -> Uuid) -> Self {
        let next = if items.len() as u64 > limit {
            items.truncate(limit as usize);
            items.last().map(id_of)
        } else {
            None
        };
        Self { items, next }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// Reads one page of `select`, keyed on `id_column`, fetching one extra row to learn whether a
/// next page exists.
pub async fn fetch_page<E, C>(
    db: &C,
    select: Select<E>,
    id_column: E::Column,
    id_of: impl Fn(&E::Model) -> Uuid,
    page: PageRequest,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let select = match page.after {
        Some(after) => select.filter(id_column.lt(after)),
        None => select,
    };
    let items = select
        .order_by_desc(id_column)
        .limit(page.limit + 1)
        .all(db)
        .await?;
    Ok(Page::of(items, page.limit, id_of))
}
