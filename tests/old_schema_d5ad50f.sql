-- The node schema at commit d5ad50f (before dead letters, departments and submission digests),
-- dumped from SQLModel's create_all of that commit: tests/test_migrations.py upgrades it.
CREATE TABLE application (
	id VARCHAR NOT NULL, 
	service_id VARCHAR NOT NULL, 
	owner_node VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	status_sequence INTEGER NOT NULL, 
	submitted_at_ms BIGINT NOT NULL, 
	due_at_ms BIGINT NOT NULL, 
	submitted_by VARCHAR NOT NULL, 
	idempotency_key VARCHAR NOT NULL, 
	purpose VARCHAR NOT NULL, 
	policy_decision_id VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_application_idem UNIQUE (submitted_by, idempotency_key)
);
CREATE TABLE audit_record (
	seq INTEGER NOT NULL, 
	at_ms BIGINT NOT NULL, 
	direction VARCHAR NOT NULL, 
	peer VARCHAR NOT NULL, 
	method VARCHAR NOT NULL, 
	envelope_digest VARCHAR NOT NULL, 
	detail VARCHAR NOT NULL, 
	prev_hash VARCHAR NOT NULL, 
	hash VARCHAR NOT NULL, 
	PRIMARY KEY (seq)
);
CREATE TABLE inbound_application (
	id VARCHAR NOT NULL, 
	origin_node VARCHAR NOT NULL, 
	service_id VARCHAR NOT NULL, 
	service_version INTEGER NOT NULL, 
	handler VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	sequence INTEGER NOT NULL, 
	received_at_ms BIGINT NOT NULL, 
	due_at_ms BIGINT NOT NULL, 
	purpose VARCHAR NOT NULL, 
	sealed_payload BLOB NOT NULL, 
	fields_present VARCHAR NOT NULL, 
	reason VARCHAR NOT NULL, 
	rule_id VARCHAR NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE outbox_entry (
	id INTEGER NOT NULL, 
	next_hop VARCHAR NOT NULL, 
	destination VARCHAR NOT NULL, 
	method VARCHAR NOT NULL, 
	item_id VARCHAR NOT NULL, 
	body BLOB NOT NULL, 
	created_at_ms BIGINT NOT NULL, 
	next_attempt_ms BIGINT NOT NULL, 
	attempts INTEGER NOT NULL, 
	state VARCHAR NOT NULL, 
	last_error VARCHAR NOT NULL, 
	claimed_until_ms BIGINT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE peer_catalogue (
	node_id VARCHAR NOT NULL, 
	digest BLOB NOT NULL, 
	catalogue BLOB NOT NULL, 
	fetched_at_ms BIGINT NOT NULL, 
	PRIMARY KEY (node_id)
);
CREATE TABLE peer_state (
	node_id VARCHAR NOT NULL, 
	failures INTEGER NOT NULL, 
	backoff_until_ms BIGINT NOT NULL, 
	last_error VARCHAR NOT NULL, 
	last_success_ms BIGINT NOT NULL, 
	PRIMARY KEY (node_id)
);
CREATE TABLE policy_decision (
	decision_id VARCHAR(40) NOT NULL, 
	at_ms BIGINT NOT NULL, 
	allowed BOOLEAN NOT NULL, 
	code VARCHAR(32) NOT NULL, 
	deciding_rule VARCHAR(80) NOT NULL, 
	rule_ids VARCHAR NOT NULL, 
	reason VARCHAR NOT NULL, 
	obligations VARCHAR NOT NULL, 
	bundle_revision VARCHAR(160) NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	peer_node VARCHAR(32) NOT NULL, 
	peer_jurisdiction VARCHAR(12) NOT NULL, 
	service_id VARCHAR(128) NOT NULL, 
	service_owner VARCHAR(12) NOT NULL, 
	service_department VARCHAR(128) NOT NULL, 
	purpose VARCHAR(64) NOT NULL, 
	role VARCHAR(64) NOT NULL, 
	fields VARCHAR NOT NULL, 
	consent BOOLEAN NOT NULL, 
	PRIMARY KEY (decision_id)
);
CREATE TABLE receipt_record (
	id INTEGER NOT NULL, 
	application_id VARCHAR NOT NULL, 
	from_node VARCHAR NOT NULL, 
	outcome VARCHAR NOT NULL, 
	reason_code VARCHAR NOT NULL, 
	reason VARCHAR NOT NULL, 
	rule_id VARCHAR NOT NULL, 
	received_at_ms BIGINT NOT NULL, 
	envelope BLOB NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE result_document (
	id INTEGER NOT NULL, 
	application_id VARCHAR NOT NULL, 
	name VARCHAR NOT NULL, 
	content_type VARCHAR NOT NULL, 
	data BLOB NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE seen_nonce (
	sender VARCHAR NOT NULL, 
	nonce BLOB NOT NULL, 
	created_at_ms BIGINT NOT NULL, 
	PRIMARY KEY (sender, nonce)
);
CREATE TABLE session_token (
	token_hash VARCHAR NOT NULL, 
	username VARCHAR NOT NULL, 
	expires_at_ms BIGINT NOT NULL, 
	PRIMARY KEY (token_hash)
);
CREATE TABLE status_event (
	id INTEGER NOT NULL, 
	application_id VARCHAR NOT NULL, 
	sequence INTEGER NOT NULL, 
	status VARCHAR NOT NULL, 
	reason VARCHAR NOT NULL, 
	rule_id VARCHAR NOT NULL, 
	at_ms BIGINT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_status_seq UNIQUE (application_id, sequence)
);
CREATE TABLE user_account (
	username VARCHAR NOT NULL, 
	role VARCHAR NOT NULL, 
	password_hash VARCHAR NOT NULL, 
	created_at_ms BIGINT NOT NULL, 
	PRIMARY KEY (username)
);
CREATE INDEX ix_application_status ON application (status);
CREATE INDEX ix_inbound_application_origin_node ON inbound_application (origin_node);
CREATE INDEX ix_inbound_application_status ON inbound_application (status);
CREATE INDEX ix_outbox_entry_item_id ON outbox_entry (item_id);
CREATE INDEX ix_outbox_entry_next_attempt_ms ON outbox_entry (next_attempt_ms);
CREATE INDEX ix_outbox_entry_next_hop ON outbox_entry (next_hop);
CREATE INDEX ix_outbox_entry_state ON outbox_entry (state);
CREATE INDEX ix_policy_decision_at_ms ON policy_decision (at_ms);
CREATE INDEX ix_receipt_record_application_id ON receipt_record (application_id);
CREATE INDEX ix_result_document_application_id ON result_document (application_id);
CREATE INDEX ix_seen_nonce_created_at_ms ON seen_nonce (created_at_ms);
CREATE INDEX ix_session_token_expires_at_ms ON session_token (expires_at_ms);
CREATE INDEX ix_session_token_username ON session_token (username);
CREATE INDEX ix_status_event_application_id ON status_event (application_id);
