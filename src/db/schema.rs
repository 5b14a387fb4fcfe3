// Maintained by hand to match migrations/sqlite and migrations/postgres
// (see diesel.toml): only types both backends share under MultiConnection.

diesel::table! {
    entities (id) {
        id -> Text,
        entity_number -> Text,
        name -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    applications (id) {
        id -> Text,
        entity_id -> Text,
        application_name -> Text,
        application_type -> Text,
        application_number -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        entity_id -> Text,
        employee_number -> Text,
        login_name -> Text,
        email -> Nullable<Text>,
        display_name -> Text,
        preferred_language -> Text,
        password_hash -> Nullable<Text>,
        pin_hash -> Nullable<Text>,
        failed_logins -> Integer,
        failed_logins_since -> Nullable<Timestamp>,
        locked_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        failed_second_factors -> Integer,
        failed_second_factors_since -> Nullable<Timestamp>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        algorithm -> Text,
        private_key -> Binary,
        public_key -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        value -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        entity_id -> Text,
        application_id -> Nullable<Text>,
        status -> Text,
        passed_login_otp -> Bool,
        password_verified_at -> Nullable<Timestamp>,
        otp_email_verified_at -> Nullable<Timestamp>,
        totp_verified_at -> Nullable<Timestamp>,
        metadata -> Text,
        user_agent_ip -> Nullable<Text>,
        user_agent_description -> Nullable<Text>,
        token_id -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        expires_at -> Timestamp,
        verified_at -> Nullable<Timestamp>,
        failure_code -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        sequence -> BigInt,
        user_agent_fingerprint_id -> Nullable<Text>,
        user_agent_header -> Nullable<Text>,
        creator -> Nullable<Text>,
        entity_field -> Nullable<Text>,
        entity_field_value -> Nullable<Text>,
        mobile_application_id -> Nullable<Text>,
        desktop_application_id -> Nullable<Text>,
        context -> Nullable<Text>,
    }
}

diesel::table! {
    one_requests (id) {
        id -> Text,
        operation -> Text,
        session_id -> Text,
        sequence -> BigInt,
        status -> Text,
        command -> Text,
        sealed_secret -> Nullable<Binary>,
        caller -> Text,
        idempotency_key -> Nullable<Text>,
        body_digest -> Binary,
        client_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        result -> Nullable<Text>,
        error -> Nullable<Text>,
        token_issued_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    otp_challenges (id) {
        id -> Text,
        user_id -> Text,
        session_id -> Nullable<Text>,
        purpose -> Text,
        code_hmac -> Binary,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        attempts -> Integer,
        max_attempts -> Integer,
        consumed_at -> Nullable<Timestamp>,
        burned_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        kind -> Text,
        language -> Text,
        recipient -> Text,
        subject -> Text,
        context -> Text,
        sealed_code -> Nullable<Binary>,
        message_id -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        occurred_at -> Timestamp,
        kind -> Text,
        outcome -> Text,
        user_id -> Nullable<Text>,
        session_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    totp_devices (user_id) {
        user_id -> Text,
        secret_nonce -> Binary,
        secret_ciphertext -> Binary,
        confirmed_at -> Nullable<Timestamp>,
        last_used_step -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    recovery_codes (id) {
        id -> Text,
        user_id -> Text,
        code_hmac -> Binary,
        used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    login_lockouts (user_id, source) {
        user_id -> Text,
        source -> Text,
        failed -> Integer,
        failed_since -> Nullable<Timestamp>,
        locked_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    one_request_sessions (session_id) {
        session_id -> Text,
        last_sequence -> BigInt,
    }
}

diesel::table! {
    rate_limit_windows (client) {
        client -> Text,
        window_minute -> BigInt,
        count -> Integer,
    }
}

diesel::joinable!(applications -> entities (entity_id));
diesel::joinable!(users -> entities (entity_id));
diesel::joinable!(sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    entities,
    applications,
    users,
    signing_keys,
    server_secrets,
    sessions,
    otp_challenges,
    outbox,
    audit_events,
    totp_devices,
    recovery_codes,
    login_lockouts,
    one_requests,
    one_request_sessions,
    rate_limit_windows,
);
