//! Commands in a sandbox, buffered and streaming, through its agent.

use super::*;

impl Engine {
    /// Fills in what the sandbox's image says a command runs as.
    pub(super) fn with_defaults(sb: &Sandbox, req: &ExecRequest) -> ExecRequest {
        let mut r = req.clone();
        if r.user.is_none() {
            r.user = sb.config.user.clone();
        }
        r
    }

    pub async fn exec(&self, p: &Principal, id: Uuid, req: &ExecRequest) -> Result<ExecResult> {
        self.audited(
            p,
            "sandbox.exec",
            Some(id),
            serde_json::Value::Null,
            async move {
                req.validate(&self.cfg.limits)?;
                let (sb, live) = self.live_for(p, id).await?;
                let request = self.emit_alongside(&sb, exec_request_data(&sb, req));
                let r = live.agent.exec(&Self::with_defaults(&sb, req)).await;
                let request_id = request.await;
                self.emit_later(&sb, exec_response_data(request_id, &r));
                r
            },
        )
        .await
    }

    /// Starts a command and streams its events; `control` feeds it.
    pub async fn exec_stream(
        self: &Arc<Self>,
        p: &Principal,
        id: Uuid,
        req: &ExecRequest,
        control: mpsc::Receiver<ExecControl>,
    ) -> Result<impl Stream<Item = Result<ExecEvent>> + Send + 'static> {
        self.audited(
            p,
            "sandbox.exec",
            Some(id),
            serde_json::json!({"stream": true}),
            async move {
                req.validate(&self.cfg.limits)?;
                let (sb, live) = self.live_for(p, id).await?;
                let mut data = exec_request_data(&sb, req);
                if let EventData::ExecRequest(r) = &mut data {
                    r.pty = Some(req.pty.is_some());
                }
                let request_id = self.emit(&sb, data);
                let s = match live
                    .agent
                    .exec_stream(&Self::with_defaults(&sb, req), control)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        let r: Result<ExecResult> = Err(e.clone());
                        self.emit_later(&sb, exec_response_data(request_id, &r));
                        return Err(e);
                    }
                };
                let engine = self.clone();
                Ok(s.inspect(move |ev| {
                    if let Ok(ExecEvent::Exit(r)) = ev {
                        engine.emit_later(&sb, exec_response_data(request_id, &Ok(r.clone())));
                    }
                }))
            },
        )
        .await
    }
}

pub(super) fn exec_request_data(sb: &Sandbox, req: &ExecRequest) -> EventData {
    let command = match &req.shell {
        Some(s) => s.clone(),
        None => req.cmd.join(" "),
    };
    EventData::ExecRequest(ev::ExecRequested {
        cmd: req.cmd.clone(),
        shell: req.shell.clone(),
        command,
        cwd: req.cwd.clone().unwrap_or_else(|| sb.config.cwd.clone()),
        pty: None,
    })
}

pub(super) fn exec_response_data(request_id: Option<i64>, r: &Result<ExecResult>) -> EventData {
    EventData::ExecResponse(match r {
        Ok(r) => ev::ExecResponded {
            request_id,
            exit_code: Some(r.exit_code),
            timed_out: Some(r.timed_out),
            duration_ms: Some(r.duration_ms),
            error: None,
        },
        Err(e) => ev::ExecResponded {
            request_id,
            exit_code: None,
            timed_out: None,
            duration_ms: None,
            error: Some(e.to_string()),
        },
    })
}
