use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tools {
    Table,
    /// The id of the key that sealed the credentials; null when the tool has none.
    CredentialsKeyId,
    /// Nonce and ciphertext of the tool's credentials (XChaCha20-Poly1305).
    CredentialsSealed,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Tools::Table)
                    .add_column(
                        ColumnDef::new(Tools::CredentialsKeyId)
                            .string_len(64)
                            .null(),
                    )
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tools::Table)
                    .add_column(ColumnDef::new(Tools::CredentialsSealed).blob().null())
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Tools::CredentialsSealed, Tools::CredentialsKeyId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tools::Table)
                        .drop_column(column)
                        .take(),
                )
                .await?;
        }
        Ok(())
    }
}
