use sea_orm::entity::prelude::*;

/// One execution of a flow, and its place in the queue.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub org_id: Uuid,
    pub flow_id: Uuid,
    /// The user who started the run.
    pub user_id: Uuid,
    pub flow_version: i32,
    /// The flow's steps when the run was started.
    #[sea_orm(column_type = "JsonBinary")]
    pub steps: Json,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub inputs: Json,
    /// Step id -> `{"status", "output"}` of the steps done so far.
    #[sea_orm(column_type = "JsonBinary")]
    pub step_results: Json,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub error: Option<Json>,
    pub idempotency_key: Option<String>,
    /// SHA-256 (hex) of the request that started the run.
    pub request_digest: Option<String>,
    /// The index of the step to work next.
    pub step_index: i32,
    /// How many attempts of that step have begun.
    pub step_attempt: i32,
    /// How many events the run has had; the last event's id.
    pub event_seq: i32,
    /// When the run may next be claimed; null while leased and once finished.
    pub available_at: Option<DateTimeUtc>,
    /// The claim that holds the run.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub cancel_requested: bool,
    /// When a run that has not finished is failed.
    pub deadline_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    /// The W3C `traceparent` of the request that started the run; its calls continue the trace.
    pub traceparent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::organization::Entity",
        from = "Column::OrgId",
        to = "super::organization::Column::Id"
    )]
    Organization,
    #[sea_orm(
        belongs_to = "super::flow::Entity",
        from = "(Column::OrgId, Column::FlowId)",
        to = "(super::flow::Column::OrgId, super::flow::Column::Id)"
    )]
    Flow,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "(Column::OrgId, Column::UserId)",
        to = "(super::user::Column::OrgId, super::user::Column::Id)"
    )]
    User,
}

impl Related<super::organization::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Organization.def()
    }
}

impl Related<super::flow::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Flow.def()
    }
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
