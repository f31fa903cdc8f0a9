//! The routes: the guard every request passes ([`guard`]: Host, Origin, token, cookie, key),
//! the page's assets, and the JSON API, each handler one call into `clan-lib` (run on the
//! blocking pool: evaluation, git and SSH block). Reads are `GET`, changes `POST`; errors are
//! `{error, causes, hint}` with 422 for a failure the clan's content explains (a validation,
//! a machine) and 400 for everything else.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clan_deploy::deploy::DeployOptions;
use clan_error::{Exit, Hint};
use clan_inventory::{MachineName, RoleTarget, SettingScope};
use clan_lib::instances::{Edit, RoleMember, Setting};
use clan_lib::vars::{Answered, PromptValues, Vars};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::jobs::Status;
use crate::security::KEY_HEADER;
use crate::App;

type Shared = State<Arc<App>>;
type Reply = Result<Json<Value>, Failure>;

/// An error as the API returns it.
pub struct Failure {
    status: StatusCode,
    body: Value,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            body: json!({"error": message.into(), "causes": [], "hint": null}),
        }
    }

    /// A library error with its causes and hint.
    fn of<E: Hint>(error: &E) -> Failure {
        let mut causes = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        Failure {
            status: match error.exit() {
                Exit::Failed => StatusCode::UNPROCESSABLE_ENTITY,
                Exit::Error => StatusCode::BAD_REQUEST,
            },
            body: json!({"error": error.to_string(), "causes": causes, "hint": error.hint()}),
        }
    }

    fn no_clan() -> Failure {
        Failure::new(StatusCode::CONFLICT, "no clan yet: create one first")
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<clan_lib::Error> for Failure {
    fn from(error: clan_lib::Error) -> Failure {
        Failure::of(&error)
    }
}

impl From<crate::Error> for Failure {
    fn from(error: crate::Error) -> Failure {
        Failure::of(&error)
    }
}

/// Runs blocking library work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "a bug")))
}

/// The admin's keys, where the environment says (as for the CLI).
fn keys() -> clan_secrets::KeySources {
    clan_secrets::KeySources::from_env()
}

fn clan_dir(app: &App) -> Result<PathBuf, Failure> {
    app.clan_dir().ok_or_else(Failure::no_clan)
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*file}", get(asset))
        .route("/api/openapi.json", get(openapi))
        .route("/api/session", get(session))
        .route("/api/tokens", post(new_token))
        .route("/api/clan", post(create_clan))
        .route("/api/fleet", get(fleet))
        .route("/api/status", get(status))
        .route("/api/machines", post(create_machine))
        .route("/api/machines/{name}", get(machine))
        .route("/api/machines/{name}/generations", get(generations))
        .route("/api/machines/{name}/rollback", post(rollback))
        .route("/api/services", get(services))
        .route("/api/instances", post(create_instance))
        .route("/api/instances/{name}/settings", post(set_settings))
        .route("/api/instances/{name}/members", post(members))
        .route("/api/vars/prompts", get(prompts))
        .route("/api/vars/generate", post(generate))
        .route("/api/deploys", get(deploys).post(deploy))
        .route("/api/deploys/{id}", get(deploy_record))
        .route("/api/deploys/{id}/events", get(deploy_events))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// An empty response with `status`: a refused request learns nothing else.
fn refuse(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Every request passes here first.
async fn guard(State(app): Shared, request: Request, next: Next) -> Response {
    let security = &app.security;
    let headers = request.headers();
    let host = header_str(headers, header::HOST);
    let Some(host) = host.filter(|host| security.host_ok(Some(host))) else {
        return refuse(StatusCode::MISDIRECTED_REQUEST);
    };
    if !security.origin_ok(
        host,
        header_str(headers, header::ORIGIN),
        header_str(headers, "sec-fetch-site"),
    ) {
        return refuse(StatusCode::FORBIDDEN);
    }
    if !matches!(*request.method(), Method::GET | Method::POST) {
        return refuse(StatusCode::METHOD_NOT_ALLOWED);
    }
    let path = request.uri().path();
    let token = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    });
    if let (Some(token), "/") = (token, path) {
        if request.method() != Method::GET || !security.redeem(token) {
            return refuse(StatusCode::UNAUTHORIZED);
        }
        // The key travels in the fragment, which the browser keeps to itself.
        let mut response = refuse(StatusCode::SEE_OTHER);
        let headers = response.headers_mut();
        for (name, value) in [
            (header::LOCATION, format!("/#key={}", security.key())),
            (header::SET_COOKIE, security.set_cookie()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        return with_headers(response);
    }
    if !security.session_ok(header_str(headers, header::COOKIE)) {
        return refuse(StatusCode::UNAUTHORIZED);
    }
    if path.starts_with("/api/") && !security.key_ok(header_str(headers, KEY_HEADER)) {
        return refuse(StatusCode::UNAUTHORIZED);
    }
    with_headers(next.run(request).await)
}

/// Headers every answer carries: nothing cached, framed, sniffed or referred.
fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn not_found() -> Response {
    refuse(StatusCode::NOT_FOUND)
}

async fn index() -> Response {
    crate::assets::response("index.html")
}

async fn asset(UrlPath(file): UrlPath<String>) -> Response {
    crate::assets::response(&file)
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn session(State(app): Shared) -> Json<Value> {
    Json(json!({ "clan": app.clan_dir() }))
}

async fn new_token(State(app): Shared) -> Json<Value> {
    let token = app.security.new_token();
    Json(json!({ "token": token }))
}

#[derive(Deserialize)]
struct NewClan {
    directory: PathBuf,
    name: Option<String>,
    #[serde(default = "default_domain")]
    domain: String,
}

fn default_domain() -> String {
    "clan".to_owned()
}

async fn create_clan(State(app): Shared, Json(new): Json<NewClan>) -> Reply {
    if !new.directory.is_absolute() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "the directory must be an absolute path",
        ));
    }
    let work_app = app.clone();
    blocking(move || {
        let created = clan_lib::init::init(
            &clan_lib::init::InitOptions {
                dir: new.directory.clone(),
                name: new.name,
                domain: new.domain,
                user: None,
                keys: keys(),
            },
            &clan_lib::Silent,
        )?;
        work_app.jobs.load(&new.directory)?;
        *work_app
            .clan_dir
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(new.directory.clone());
        Ok(Json(json!({
            "name": created.name,
            "directory": new.directory,
            "user": created.user.to_string(),
            "keyCreated": created.key_created.map(|(path, _)| path),
        })))
    })
    .await
}

async fn fleet(State(app): Shared) -> Reply {
    let dir = clan_dir(&app)?;
    blocking(move || {
        let summary = clan_lib::show::summary(&dir)?;
        Ok(Json(json!({
            "meta": summary.meta,
            "machines": summary.machines.values().collect::<Vec<_>>(),
            "instances": summary.instances,
        })))
    })
    .await
}

/// Machines asked at once for the live status.
const STATUS_JOBS: usize = 20;

/// Every machine's live status (`clan machines status`): asked over SSH, so the page loads
/// the fleet first and this after.
async fn status(State(app): Shared) -> Reply {
    let dir = clan_dir(&app)?;
    blocking(move || {
        let statuses = clan_lib::deploy::status(&dir, &[], &[], &app.ssh, STATUS_JOBS)?;
        Ok(Json(json!(statuses)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewMachine {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    target_host: Option<String>,
    description: Option<String>,
}

/// A name or value the inventory refuses, as a 422 naming it.
fn invalid(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("invalid {what}: {error}"),
    )
}

async fn create_machine(State(app): Shared, Json(new): Json<NewMachine>) -> Reply {
    let dir = clan_dir(&app)?;
    let machine = clan_lib::machines::NewMachine {
        name: new.name.parse().map_err(|e| invalid("machine name", e))?,
        tags: new
            .tags
            .iter()
            .map(|tag| tag.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("tag", e))?,
        class: clan_inventory::MachineClass::Linux,
        target_host: new.target_host.filter(|host| !host.is_empty()),
        description: new.description.filter(|text| !text.is_empty()),
    };
    blocking(move || {
        clan_lib::machines::create(&dir, &machine, &clan_lib::Silent)?;
        Ok(Json(json!({ "name": machine.name.to_string() })))
    })
    .await
}

async fn machine(State(app): Shared, UrlPath(name): UrlPath<String>) -> Reply {
    let dir = clan_dir(&app)?;
    let name = machine_name(&name)?;
    blocking(move || {
        let machine = clan_lib::machines::show(&dir, &name)?;
        // Only this machine's generators: a large clan is not evaluated whole for one page.
        let vars = Vars::open_for(&dir, std::slice::from_ref(&name), keys())
            .and_then(|vars| vars.list(&name));
        let (vars, vars_error) = match vars {
            Ok(vars) => (json!(vars), Value::Null),
            Err(error) => (json!([]), Failure::of(&error).body),
        };
        Ok(Json(
            json!({ "machine": machine, "vars": vars, "varsError": vars_error }),
        ))
    })
    .await
}

async fn generations(State(app): Shared, UrlPath(name): UrlPath<String>) -> Reply {
    let dir = clan_dir(&app)?;
    let name = machine_name(&name)?;
    blocking(move || {
        let generations = clan_lib::deploy::generations(&dir, &name, None, &app.ssh)?;
        let current = generations.current_entry();
        Ok(Json(
            json!({ "generations": generations, "currentEntry": current }),
        ))
    })
    .await
}

#[derive(Deserialize)]
struct RollbackTo {
    to: Option<String>,
}

async fn rollback(
    State(app): Shared,
    UrlPath(name): UrlPath<String>,
    Json(to): Json<RollbackTo>,
) -> Reply {
    let dir = clan_dir(&app)?;
    let name = machine_name(&name)?;
    blocking(move || {
        let activation = clan_lib::deploy::rollback(&dir, &name, None, to.to.as_deref(), &app.ssh)?;
        Ok(Json(json!(activation)))
    })
    .await
}

async fn services(State(app): Shared) -> Reply {
    let dir = clan_dir(&app)?;
    blocking(move || {
        let services = clan_lib::services::list(&dir)?;
        let list: Vec<Value> = services
            .iter()
            .map(|(name, service)| {
                let mut described = json!(clan_lib::services::describe(service));
                described["name"] = json!(name);
                described
            })
            .collect();
        Ok(Json(json!(list)))
    })
    .await
}

/// A role member as the page sends it: `target` is a machine name or `tag:TAG`.
#[derive(Deserialize)]
struct Member {
    role: String,
    target: String,
}

/// A setting as the page sends it; `target` (a machine or `tag:TAG`) scopes it.
#[derive(Deserialize)]
struct SettingInput {
    role: String,
    target: Option<String>,
    key: String,
    value: Value,
}

fn member(member: &Member) -> Result<RoleMember, Failure> {
    format!("{}={}", member.role, member.target)
        .parse()
        .map_err(|e| invalid("role member", e))
}

fn setting(input: &SettingInput) -> Result<Setting, Failure> {
    let scope = match &input.target {
        Some(target) if !target.is_empty() => SettingScope::Member(
            target
                .parse::<RoleTarget>()
                .map_err(|e| invalid("target", e))?,
        ),
        _ => SettingScope::Role,
    };
    if input.key.is_empty() || input.key.split('.').any(str::is_empty) {
        return Err(invalid("setting key", &input.key));
    }
    Ok(Setting {
        role: input.role.parse().map_err(|e| invalid("role", e))?,
        scope,
        key: input.key.clone(),
        value: input.value.clone(),
    })
}

async fn edit(app: Arc<App>, edit: Edit) -> Reply {
    let dir = clan_dir(&app)?;
    blocking(move || {
        let message = clan_lib::instances::edit(&dir, &edit, &clan_lib::Silent)?;
        Ok(Json(json!({ "commit": message })))
    })
    .await
}

#[derive(Deserialize)]
struct NewInstance {
    name: String,
    service: String,
    #[serde(default)]
    roles: Vec<Member>,
    #[serde(default)]
    settings: Vec<SettingInput>,
}

async fn create_instance(State(app): Shared, Json(new): Json<NewInstance>) -> Reply {
    let create = Edit::Create {
        name: new.name.parse().map_err(|e| invalid("instance name", e))?,
        service: new.service.parse().map_err(|e| invalid("service", e))?,
        roles: new.roles.iter().map(member).collect::<Result<_, _>>()?,
        settings: new.settings.iter().map(setting).collect::<Result<_, _>>()?,
    };
    edit(app, create).await
}

#[derive(Deserialize)]
struct Settings {
    settings: Vec<SettingInput>,
}

async fn set_settings(
    State(app): Shared,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<Settings>,
) -> Reply {
    let set = Edit::Set {
        instance: name.parse().map_err(|e| invalid("instance name", e))?,
        settings: body
            .settings
            .iter()
            .map(setting)
            .collect::<Result<_, _>>()?,
    };
    edit(app, set).await
}

#[derive(Deserialize)]
struct MemberChange {
    #[serde(flatten)]
    member: Member,
    #[serde(default)]
    remove: bool,
}

async fn members(
    State(app): Shared,
    UrlPath(name): UrlPath<String>,
    Json(change): Json<MemberChange>,
) -> Reply {
    let instance = name.parse().map_err(|e| invalid("instance name", e))?;
    let RoleMember { role, target } = member(&change.member)?;
    let edit_of = if change.remove {
        Edit::Remove {
            instance,
            role,
            target,
        }
    } else {
        Edit::Add {
            instance,
            role,
            target,
        }
    };
    edit(app, edit_of).await
}

#[derive(Deserialize)]
struct MachinesQuery {
    /// Comma-separated machine names; empty: all.
    #[serde(default)]
    machines: String,
}

fn machine_name(name: &str) -> Result<MachineName, Failure> {
    name.parse().map_err(|e| invalid("machine name", e))
}

fn machine_names(list: &[String]) -> Result<Vec<MachineName>, Failure> {
    list.iter().map(|name| machine_name(name)).collect()
}

async fn prompts(State(app): Shared, Query(query): Query<MachinesQuery>) -> Reply {
    let dir = clan_dir(&app)?;
    let names: Vec<String> = query
        .machines
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    let machines = machine_names(&names)?;
    blocking(move || {
        let vars = if machines.is_empty() {
            Vars::open(&dir, keys())?
        } else {
            Vars::open_for(&dir, &machines, keys())?
        };
        let requests = vars.prompts(&machines)?;
        let list: Vec<Value> = requests
            .iter()
            .map(|request| {
                let machine = match &request.generator.placement {
                    clan_vars::Placement::PerMachine(machine) => Some(machine.to_string()),
                    clan_vars::Placement::Shared => None,
                };
                // The key the answers are sent back under (see `PromptValues`).
                let key = match &machine {
                    Some(machine) => format!("{machine}/{}", request.generator.name),
                    None => request.generator.name.clone(),
                };
                json!({
                    "machine": machine, "generator": request.generator.name, "key": key,
                    "prompt": request.name, "description": request.prompt.description,
                    "type": request.prompt.kind, "display": request.prompt.display,
                })
            })
            .collect();
        Ok(Json(json!(list)))
    })
    .await
}

/// Prompt answers, `{"<machine>/<generator>" or "<generator>": {"<prompt>": "value"}}`:
/// kept in zeroizing memory, never logged or sent back.
type AnswersInput =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Zeroizing<String>>>;

fn answered(answers: &AnswersInput) -> Answered {
    let json = serde_json::to_vec(answers).unwrap_or_default();
    Answered(PromptValues {
        json: Zeroizing::new(json),
        source: "the page".to_owned(),
    })
}

#[derive(Deserialize)]
struct GenerateInput {
    #[serde(default)]
    machines: Vec<String>,
    #[serde(default)]
    answers: AnswersInput,
}

async fn generate(State(app): Shared, Json(input): Json<GenerateInput>) -> Reply {
    let dir = clan_dir(&app)?;
    let machines = machine_names(&input.machines)?;
    blocking(move || {
        let vars = Vars::open(&dir, keys())?;
        let request = clan_lib::vars::GenerateRequest {
            machines,
            ..Default::default()
        };
        let generated =
            vars.generate(&request, &mut answered(&input.answers), &clan_lib::Silent)?;
        Ok(Json(json!({ "generated": generated })))
    })
    .await
}

async fn deploys(State(app): Shared) -> Json<Value> {
    Json(json!(app.jobs.history()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeployInput {
    #[serde(default)]
    machines: Vec<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    answers: AnswersInput,
}

async fn deploy(State(app): Shared, Json(input): Json<DeployInput>) -> Reply {
    let dir = clan_dir(&app)?;
    let agent = app.agent.clone().ok_or_else(|| {
        Failure::new(
            StatusCode::CONFLICT,
            "no clan-agent binary beside clan: deploys are not possible from this build",
        )
    })?;
    let machines = machine_names(&input.machines)?;
    let kind = if input.dry_run { "dry-run" } else { "deploy" };
    let recorder = app.jobs.start(&dir, kind, input.machines.clone())?;
    let id = recorder.id();
    let request = clan_lib::deploy::UpdateRequest {
        machines,
        tags: Vec::new(),
        target_host: None,
        no_sandbox: false,
        jobs: 10,
        ssh: app.ssh.clone(),
        options: DeployOptions {
            agent,
            confirm_timeout: Some(Duration::from_secs(app.confirm_timeout)),
            lock_timeout: Duration::from_secs(60),
            dry_run: input.dry_run,
        },
    };
    let answers = input.answers;
    tokio::task::spawn_blocking(move || {
        let result = clan_lib::deploy::update(&dir, &request, &mut answered(&answers), &recorder);
        let _ = match result {
            Ok(results) if results.iter().all(|machine| machine.result.is_ok()) => {
                recorder.finish(Status::Succeeded, None)
            }
            Ok(_) => recorder.finish(Status::Failed, None),
            Err(error) => recorder.finish(Status::Failed, Some(Failure::of(&error).body)),
        };
    });
    Ok(Json(json!({ "id": id })))
}

async fn deploy_record(State(app): Shared, UrlPath(id): UrlPath<String>) -> Reply {
    app.jobs
        .get(&id)
        .map(|record| Json(json!(record)))
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, format!("no deploy `{id}`")))
}

/// The job's events so far, then each new one as it comes, as server-sent events (the page
/// reads them with `fetch`, which can send the key header).
async fn deploy_events(State(app): Shared, UrlPath(id): UrlPath<String>) -> Response {
    let Some((past, receiver)) = app.jobs.watch(&id) else {
        return Failure::new(StatusCode::NOT_FOUND, format!("no deploy `{id}`")).into_response();
    };
    use futures_util::StreamExt as _;
    let past = futures_util::stream::iter(past)
        .map(|event| Ok::<_, Infallible>(SseEvent::default().data(event.to_string())));
    // A live event's id is when it was reported (Unix ms): the page can tell its delay.
    let live = futures_util::stream::unfold(receiver, |receiver| async move {
        let mut receiver = receiver?;
        // Lagged or closed: the stream ends and the page reloads the record.
        let (reported, event) = receiver.recv().await.ok()?;
        let last = event["kind"] == "job-finished";
        let sse = SseEvent::default()
            .id(reported.to_string())
            .data(event.to_string());
        Some((Ok(sse), (!last).then_some(receiver)))
    });
    let stream = past.chain(live);
    Sse::new(stream).into_response()
}
