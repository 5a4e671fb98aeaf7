use sea_orm::entity::prelude::*;

/// One transition of a run: a step attempt began or ended, or the run ended.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "run_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: Uuid,
    /// 1, 2, … within the run: the event's id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    /// `step` or `run`.
    pub kind: String,
    pub step_id: Option<String>,
    pub attempt: Option<i32>,
    pub status: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub data: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::run::Entity",
        from = "(Column::OrgId, Column::RunId)",
        to = "(super::run::Column::OrgId, super::run::Column::Id)"
    )]
    Run,
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
