use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "execution_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub org_id: Uuid,
    pub flow_id: Uuid,
    pub user_id: Uuid,
    pub execution_id: Option<String>,
    pub step_id: String,
    pub status: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub inputs: Json,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub outputs: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub error: Option<Json>,
    /// The run that wrote the row; null on rows written through the API.
    pub run_id: Option<Uuid>,
    /// The step attempt, from 1.
    pub attempt: Option<i32>,
    pub duration_ms: Option<i64>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
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
