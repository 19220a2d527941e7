//! Chat templating: turns role/content messages into the prompt text the
//! model expects, with the model's own template. llama.cpp's built-in
//! renderer handles the templates it recognises; any other template text
//! from the GGUF is rendered with minijinja; a model without a template
//! falls back to ChatML (logged once at load). `model.chat_template` names a
//! llama.cpp built-in template that replaces the GGUF's own.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};

use super::{ChatMessage, ModelError};

/// How prompts are rendered for one loaded model.
pub enum Renderer {
    /// llama.cpp's recogniser knows the template.
    Native(LlamaChatTemplate),
    /// Jinja text from the GGUF, rendered by minijinja.
    Jinja { source: String, bos: String, eos: String },
}

impl Renderer {
    /// Picks the renderer for a model: the configured built-in template if
    /// any, else the model's own, tried with llama.cpp on a probe chat.
    /// Also returns how the template was chosen, for the load log.
    pub fn for_model(model: &LlamaModel, configured: Option<&str>) -> Result<(Renderer, String), ModelError> {
        let probe = [ChatMessage::user("hi")];
        if let Some(name) = configured {
            let tmpl = LlamaChatTemplate::new(name).map_err(|e| ModelError::Template(e.to_string()))?;
            let native = Renderer::Native(tmpl);
            native
                .render(model, &probe)
                .map_err(|e| ModelError::Template(format!("model.chat_template {name:?} is not a template llama.cpp knows ({e})")))?;
            return Ok((native, format!("{name} (model.chat_template)")));
        }
        let tmpl = match model.chat_template(None) {
            Ok(t) => t,
            Err(_) => {
                let chatml = LlamaChatTemplate::new("chatml").map_err(|e| ModelError::Template(e.to_string()))?;
                return Ok((Renderer::Native(chatml), "chatml (model has no template)".to_owned()));
            }
        };
        let native = Renderer::Native(tmpl);
        if native.render(model, &probe).is_ok() {
            return Ok((native, "model template (llama.cpp)".to_owned()));
        }
        let Renderer::Native(tmpl) = native else { unreachable!("constructed as Native above") };
        let source = tmpl.to_string().map_err(|e| ModelError::Template(e.to_string()))?;
        let vocab = model.vocab();
        let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
        let jinja = Renderer::Jinja { source, bos: piece(vocab.bos()), eos: piece(vocab.eos()) };
        jinja.render(model, &probe)?;
        Ok((jinja, "model template (minijinja)".to_owned()))
    }

    /// Renders `messages` and opens the assistant's turn.
    pub fn render(&self, model: &LlamaModel, messages: &[ChatMessage]) -> Result<String, ModelError> {
        match self {
            Renderer::Native(tmpl) => {
                let msgs = messages
                    .iter()
                    .map(|m| LlamaChatMessage::new(m.role.as_str().to_owned(), m.content.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    // A NUL byte in user text cannot cross into C.
                    .map_err(|_| ModelError::InvalidPrompt("text contains a NUL character".into()))?;
                model.apply_chat_template(tmpl, &msgs, true).map_err(|e| ModelError::Template(e.to_string()))
            }
            Renderer::Jinja { source, bos, eos } => {
                let mut env = minijinja::Environment::new();
                env.add_template("chat", source).map_err(|e| ModelError::Template(e.to_string()))?;
                let msgs: Vec<_> =
                    messages.iter().map(|m| minijinja::context! { role => m.role.as_str(), content => m.content.as_str() }).collect();
                env.get_template("chat")
                    .and_then(|t| {
                        t.render(minijinja::context! {
                            messages => msgs, add_generation_prompt => true, bos_token => bos, eos_token => eos
                        })
                    })
                    .map_err(|e| ModelError::Template(e.to_string()))
            }
        }
    }
}
