//! A Dify `/chat-messages` or `/completion-messages` body, then the turn it
//! starts in a chat app with every kind of form field.
#![no_main]

use std::sync::{Arc, LazyLock};

use edgeaid::engine::AppDefinition;
use edgeaid::fuzzing::{chat_app, dify_message_body};
use libfuzzer_sys::fuzz_target;

static APP: LazyLock<Arc<AppDefinition>> = LazyLock::new(chat_app);

fuzz_target!(|data: &[u8]| {
    dify_message_body(&APP, data);
});
