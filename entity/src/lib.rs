//! sea-orm entities for Tolstoy's tables, in the format sea-orm-cli generates.
//!
//! Every tenant table carries `org_id`; references between tenant rows are composite
//! `(org_id, parent_id)` foreign keys, so a row can only point at a parent of its own organization.

pub mod action;
pub mod api_key;
pub mod execution_log;
pub mod flow;
pub mod organization;
pub mod run;
pub mod run_event;
pub mod tool;
pub mod user;

pub mod prelude {
    pub use super::action::Entity as Action;
    pub use super::api_key::Entity as ApiKey;
    pub use super::execution_log::Entity as ExecutionLog;
    pub use super::flow::Entity as Flow;
    pub use super::organization::Entity as Organization;
    pub use super::run::Entity as Run;
    pub use super::run_event::Entity as RunEvent;
    pub use super::tool::Entity as Tool;
    pub use super::user::Entity as User;
}
