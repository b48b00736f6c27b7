//! The REST API's contract, pinned: the OpenAPI document generated from the
//! handlers must equal `docs/openapi.json`. A change to a route or a wire
//! type shows up here and is accepted with `cargo xtask bless`.

#[test]
fn openapi_document_matches_docs_openapi_json() {
    let doc = serde_json::to_string_pretty(&bifrost_gateway::openapi::document()).expect("json") + "\n";
    bifrost_testkit::golden::check("docs/openapi.json", &doc);
}
