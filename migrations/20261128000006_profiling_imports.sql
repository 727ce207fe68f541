-- Uploaded import files, line by line, until the import job has processed them. Any
-- replica's job runner can pick the import up, since the file lives in the database.
CREATE TABLE profiling.import_lines (
    tenant_id  uuid NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    import_id  uuid NOT NULL,
    line_no    bigint NOT NULL,
    line       text NOT NULL,
    PRIMARY KEY (tenant_id, import_id, line_no)
);
