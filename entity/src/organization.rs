use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    /// Days that execution logs and finished runs are kept; `None`: the server's
    /// `RETENTION_DAYS`; 0: for ever.
    pub retention_days: Option<i32>,
    /// The domains users' emails must be in, normalised (lower-case ASCII, `*.` for
    /// subdomains); `None` or empty: any.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub allowed_email_domains: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::user::Entity")]
    User,
    #[sea_orm(has_many = "super::tool::Entity")]
    Tool,
    #[sea_orm(has_many = "super::action::Entity")]
    Action,
    #[sea_orm(has_many = "super::flow::Entity")]
    Flow,
    #[sea_orm(has_many = "super::execution_log::Entity")]
    ExecutionLog,
}

impl ActiveModelBehavior for ActiveModel {}
