//! The tenant door's hottest statements, built once per shape and reused.
//!
//! Building a statement with sea-orm (the `Select`, its conditions, the SQL text, then dropping
//! it all) cost a tenth of the server's CPU on `GET /tools/{id}` (docs/benchmarks.md). A
//! statement's text depends only on its shape: the table, the backend, and what the caller's
//! rights add to the membership check. So each shape is built once, with stand-in values for the
//! organization, the user, the row id, the cursor and the limit; the places where those land
//! among its parameters are remembered, and each request fills them with its own values.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use sea_orm::{DbBackend, EntityTrait, QueryTrait, Select, Statement, Value};
use uuid::Uuid;

use super::tenancy::{Role, Tenant};

// Stand-ins: values no request sends (the limit is far above MAX_LIMIT).
const ORG: Uuid = Uuid::from_u128(0x0b5e_55ed_0000_4000_8000_0000_0000_0001);
const USER: Uuid = Uuid::from_u128(0x0b5e_55ed_0000_4000_8000_0000_0000_0002);
const ID: Uuid = Uuid::from_u128(0x0b5e_55ed_0000_4000_8000_0000_0000_0003);
const LIMIT: u64 = 0x0b5e_55ed_0000;

/// The values a request brings to a statement.
#[derive(Clone, Copy, Debug)]
pub struct Bindings {
    /// The row (`get`) or the cursor (`page after`), when the statement has one.
    pub id: Option<Uuid>,
    /// The `LIMIT`, when the statement has one.
    pub limit: Option<u64>,
}

/// Which statement of which table, for which backend and which kind of caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// What the statement is, as `"one"` or `"page after"`, with its table.
    query: &'static str,
    table: &'static str,
    postgres: bool,
    operator: bool,
    least: Role,
    refused: bool,
}

impl Shape {
    /// The shape of statement `query` on `table` for `tenant`.
    pub fn new(
        query: &'static str,
        table: &'static str,
        backend: DbBackend,
        tenant: &Tenant,
    ) -> Self {
        Self {
            query,
            table,
            postgres: backend == DbBackend::Postgres,
            operator: tenant.operator,
            least: tenant.least,
            refused: tenant.least > tenant.most,
        }
    }
}

/// Where a parameter's value comes from.
#[derive(Debug)]
enum Slot {
    Org,
    User,
    Id,
    Limit,
    /// Part of the shape (a role name, a constant).
    Fixed(Value),
}

#[derive(Debug)]
struct Template {
    backend: DbBackend,
    sql: String,
    slots: Vec<Slot>,
}

static TEMPLATES: LazyLock<RwLock<HashMap<Shape, Arc<Template>>>> = LazyLock::new(Default::default);

/// The statement `build` makes for `tenant` and `bindings`, from the template of `shape`
/// (built by `build` with the stand-ins the first time).
pub fn statement<E: EntityTrait>(
    shape: Shape,
    backend: DbBackend,
    tenant: &Tenant,
    bindings: Bindings,
    build: impl Fn(&Tenant, Bindings) -> Select<E>,
) -> Statement {
    let known = TEMPLATES
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&shape)
        .cloned();
    let template = known.unwrap_or_else(|| {
        let template = Arc::new(template_of(backend, tenant, bindings, &build));
        TEMPLATES
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(shape, template.clone());
        template
    });
    let values = template
        .slots
        .iter()
        .map(|slot| match slot {
            Slot::Org => Value::from(tenant.org_id),
            Slot::User => Value::from(tenant.user_id),
            Slot::Id => Value::from(bindings.id),
            Slot::Limit => Value::from(bindings.limit),
            Slot::Fixed(value) => value.clone(),
        })
        .collect::<Vec<_>>();
    Statement::from_sql_and_values(template.backend, template.sql.clone(), values)
}

fn template_of<E: EntityTrait>(
    backend: DbBackend,
    tenant: &Tenant,
    bindings: Bindings,
    build: &impl Fn(&Tenant, Bindings) -> Select<E>,
) -> Template {
    let stand_in = Tenant {
        org_id: ORG,
        user_id: USER,
        least: tenant.least,
        most: tenant.most,
        operator: tenant.operator,
    };
    let stand_ins = Bindings {
        id: bindings.id.map(|_| ID),
        limit: bindings.limit.map(|_| LIMIT),
    };
    let built = build(&stand_in, stand_ins).build(backend);
    let slots = built
        .values
        .map(|values| values.0)
        .unwrap_or_default()
        .into_iter()
        .map(|value| {
            if value == Value::from(ORG) {
                Slot::Org
            } else if value == Value::from(USER) {
                Slot::User
            } else if value == Value::from(ID) {
                Slot::Id
            } else if value == Value::from(LIMIT) {
                Slot::Limit
            } else {
                Slot::Fixed(value)
            }
        })
        .collect();
    Template {
        backend,
        sql: built.sql,
        slots,
    }
}
