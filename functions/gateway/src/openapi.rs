//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{analytics, api, audit, live, policies, rollout, routes, scripts, traffic, webhook, wire};

#[derive(OpenApi)]
#[openapi(
    info(title = "Bifrost API", description = "Self-service deployments: projects, deployments, webhooks, tokens."),
    paths(
        api::create_project, api::list_projects, api::get_project, api::delete_project, api::set_chaos, api::end_chaos,
        api::set_split, api::reset_split, traffic::project, traffic::deployment,
        scripts::list, scripts::push, scripts::rollback, rollout::promote, rollout::abort,
        routes::table, routes::stream, routes::report, routes::routers, analytics::project, analytics::anomalies, analytics::summary, analytics::run, analytics::prices, analytics::set_prices,
        policies::list, policies::show, policies::set, policies::set_data, policies::test,
        api::create_deployment, api::list_project_deployments, api::list_deployments, api::get_deployment,
        api::deployment_events, api::retry, api::cancel,
        api::dead_letters, api::redrive,
        api::list_tokens, api::create_token, api::revoke_token, api::whoami,
        api::validate, webhook::github,
        api::deployment_logs, api::replicas, api::rollback, live::deployment_events, live::all_events,
        api::list_all_secrets, api::list_secrets, api::set_secret, api::delete_secret, api::health, api::audit, audit::verify, audit::report,
    ),
    components(schemas(
        wire::ProjectOut, wire::ChaosIn, wire::ChaosOut, wire::CreateProject, wire::DeploymentOut, wire::DeploymentDetail, wire::TransitionOut,
        wire::CreateDeployment, wire::CreatedDeployment, wire::SourceOut, wire::ConfigErrorOut, wire::EventOut,
        wire::DeadLetterOut, wire::Redrive, wire::Redriven, wire::TokenOut, wire::CreateToken,
        wire::ValidationOut, wire::WebhookOut, wire::ErrorBody, wire::ErrorDetail,
        wire::FeedItemOut, wire::Rollback, wire::ReplicaOut, wire::SetSecret, wire::SecretOut,
        wire::HealthSampleOut, wire::AuditOut, wire::SplitIn, wire::SplitOut, wire::TrafficPointOut, wire::ServingOut, wire::ProjectTrafficOut, wire::ScriptIn, wire::ScriptRollbackIn, wire::ScriptHealthOut,
        wire::ScriptVersionOut, wire::DeploymentScriptOut, wire::ScriptsOut,
        wire::PolicyOut, wire::PolicyVersionOut, wire::PoliciesOut, wire::PolicyIn, wire::PolicyDataIn, wire::PolicyTestIn, wire::DecisionOut, wire::AuditVerifyOut, wire::AuditReportOut, wire::RolloutOut,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: bifrost tokens create NAME --role viewer|deployer|admin|router"))
                    .build(),
            ),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}
