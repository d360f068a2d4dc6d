-- schema version 3 (b5d2c03)
CREATE TABLE audit_log (
	id BIGSERIAL NOT NULL, 
	at FLOAT NOT NULL, 
	actor VARCHAR(128), 
	action VARCHAR(64) NOT NULL, 
	target_type VARCHAR(32), 
	target_id VARCHAR(128), 
	run_id VARCHAR(64), 
	detail JSONB NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_audit_run ON audit_log (run_id, at);

CREATE TABLE cache_entries (
	key VARCHAR(64) NOT NULL, 
	scope VARCHAR(16) NOT NULL, 
	workflow VARCHAR(128), 
	run_id VARCHAR(64), 
	node_id VARCHAR(64) NOT NULL, 
	version VARCHAR(64) NOT NULL, 
	value JSONB, 
	created_at FLOAT NOT NULL, 
	expires_at FLOAT, 
	attempt_id VARCHAR(36), 
	PRIMARY KEY (key)
);

CREATE TABLE counters (
	name VARCHAR(64) NOT NULL, 
	value BIGINT NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE grants (
	jti VARCHAR(64) NOT NULL, 
	subject VARCHAR(128) NOT NULL, 
	scopes JSONB NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	issuer VARCHAR(128) NOT NULL, 
	issued_at FLOAT NOT NULL, 
	expires_at FLOAT NOT NULL, 
	revoked_at FLOAT, 
	revoked_by VARCHAR(128), 
	note TEXT, 
	PRIMARY KEY (jti)
);

CREATE INDEX ix_grants_subject ON grants (subject);

CREATE TABLE runs (
	run_id VARCHAR(64) NOT NULL, 
	workflow VARCHAR(128) NOT NULL, 
	workflow_version VARCHAR(64) NOT NULL, 
	module_revision VARCHAR(64) NOT NULL, 
	deployment_version VARCHAR(64) NOT NULL, 
	input JSONB NOT NULL, 
	input_hash VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	cancel_requested BOOLEAN NOT NULL, 
	next_seq BIGINT NOT NULL, 
	wake_at FLOAT, 
	created_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	finished_at FLOAT, 
	output JSONB, 
	error JSONB, 
	launched_by VARCHAR(128), 
	parent_run_id VARCHAR(64), 
	lineage JSONB, 
	reopened BOOLEAN DEFAULT false NOT NULL, 
	PRIMARY KEY (run_id)
);

CREATE INDEX ix_runs_status ON runs (status);

CREATE INDEX ix_runs_wake_at ON runs (wake_at);

CREATE INDEX ix_runs_workflow_created ON runs (workflow, created_at);

CREATE TABLE schema_version (
	version SERIAL NOT NULL, 
	applied_at FLOAT NOT NULL, 
	PRIMARY KEY (version)
);

CREATE TABLE time_travel_audit (
	id BIGSERIAL NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	action VARCHAR(16) NOT NULL, 
	caller VARCHAR(128) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	params JSONB NOT NULL, 
	result JSONB, 
	started_at FLOAT NOT NULL, 
	finished_at FLOAT, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_tta_run ON time_travel_audit (run_id);

CREATE TABLE attempts (
	attempt_id VARCHAR(36) NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	node_id VARCHAR(64) NOT NULL, 
	iteration INTEGER NOT NULL, 
	number INTEGER NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	queue VARCHAR(32) NOT NULL, 
	claim_token VARCHAR(36), 
	worker VARCHAR(200), 
	dispatched_at FLOAT NOT NULL, 
	started_at FLOAT, 
	finished_at FLOAT, 
	heartbeat_at FLOAT, 
	lease_expires_at FLOAT, 
	deadline_at FLOAT, 
	timeout_s FLOAT, 
	error JSONB, 
	cached BOOLEAN NOT NULL, 
	cache_key VARCHAR(64), 
	PRIMARY KEY (attempt_id), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id) ON DELETE CASCADE
);

CREATE INDEX ix_attempts_node ON attempts (run_id, node_id, iteration);

CREATE TABLE events (
	run_id VARCHAR(64) NOT NULL, 
	seq BIGINT NOT NULL, 
	feed_id BIGINT, 
	type VARCHAR(64) NOT NULL, 
	node_id VARCHAR(64), 
	iteration INTEGER, 
	attempt_id VARCHAR(36), 
	payload JSONB NOT NULL, 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (run_id, seq), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id) ON DELETE CASCADE, 
	UNIQUE (feed_id)
);

CREATE INDEX ix_events_unnumbered ON events (run_id, seq) WHERE feed_id IS NULL;

CREATE TABLE nodes (
	run_id VARCHAR(64) NOT NULL, 
	node_id VARCHAR(64) NOT NULL, 
	iteration INTEGER NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	failures INTEGER NOT NULL, 
	lost INTEGER NOT NULL, 
	current_attempt_id VARCHAR(36), 
	current_iteration INTEGER NOT NULL, 
	next_at FLOAT, 
	started_at FLOAT NOT NULL, 
	updated_at FLOAT NOT NULL, 
	finished_at FLOAT, 
	error JSONB, 
	PRIMARY KEY (run_id, node_id, iteration), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id) ON DELETE CASCADE
);

CREATE TABLE sandboxes (
	sandbox_id VARCHAR(64) NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	node_id VARCHAR(64) NOT NULL, 
	iteration INTEGER NOT NULL, 
	attempt_id VARCHAR(36) NOT NULL, 
	runtime VARCHAR(32) NOT NULL, 
	image VARCHAR(256) NOT NULL, 
	image_digest VARCHAR(128), 
	container_id VARCHAR(128), 
	limits JSONB NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	review_status VARCHAR(16), 
	bundle_path TEXT NOT NULL, 
	request_bytes BIGINT, 
	result_bytes BIGINT, 
	manifest JSONB, 
	error JSONB, 
	created_at FLOAT NOT NULL, 
	finished_at FLOAT, 
	PRIMARY KEY (sandbox_id), 
	FOREIGN KEY(run_id) REFERENCES runs (run_id) ON DELETE CASCADE
);

CREATE INDEX ix_sandboxes_run ON sandboxes (run_id);

CREATE TABLE approvals (
	run_id VARCHAR(64) NOT NULL, 
	node_id VARCHAR(64) NOT NULL, 
	iteration INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	owner VARCHAR(128), 
	fallback_owner VARCHAR(128), 
	escalate_at FLOAT, 
	requested_at FLOAT NOT NULL, 
	decided_by VARCHAR(128), 
	decided_at FLOAT, 
	note TEXT, 
	PRIMARY KEY (run_id, node_id, iteration), 
	FOREIGN KEY(run_id, node_id, iteration) REFERENCES nodes (run_id, node_id, iteration) ON DELETE CASCADE
);

CREATE INDEX ix_approvals_status ON approvals (status);

CREATE TABLE outputs (
	run_id VARCHAR(64) NOT NULL, 
	node_id VARCHAR(64) NOT NULL, 
	iteration INTEGER NOT NULL, 
	value JSONB, 
	attempt_id VARCHAR(36), 
	created_at FLOAT NOT NULL, 
	PRIMARY KEY (run_id, node_id, iteration), 
	FOREIGN KEY(run_id, node_id, iteration) REFERENCES nodes (run_id, node_id, iteration) ON DELETE CASCADE
);

CREATE TABLE sandbox_reviews (
	id BIGSERIAL NOT NULL, 
	sandbox_id VARCHAR(64) NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	accept BOOLEAN NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	note TEXT, 
	decided_at FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(sandbox_id) REFERENCES sandboxes (sandbox_id) ON DELETE CASCADE, 
	FOREIGN KEY(run_id) REFERENCES runs (run_id) ON DELETE CASCADE
);
