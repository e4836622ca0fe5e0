# Tenant policy for the demo's chat route, in Rego (OPA-compatible; evaluated by regopy).
# The input looks like OPA-Envoy's: input.attributes.request.http.*, input.parsed_body,
# plus input.principal (verified by the identity layer), input.route and
# input.token_estimate (the tokens the cost layer will reserve for this request).
# Kept to direct lookups: each rule and data lookup costs rego-cpp ~15-25 µs per request.
package authz

import rego.v1

default decision := {
	"allowed": false, "http_status": 403, "reason": "tenant_unknown",
	"message": "the request has no tenant",
}

plan := object.get(data.tenants.plans, input.principal.tenant, "standard")

blocked if input.principal.tenant in data.tenants.blocked

# A plan's cap on one request (prompt + the output it may ask for), beside the cost
# layer's budgets over time.
over_cap if input.token_estimate.total_tokens > data.tenants.max_request_tokens[plan]

decision := {
	"allowed": false, "http_status": 403, "reason": "tenant_blocked",
	"message": "this tenant is blocked",
} if blocked

decision := {
	"allowed": false, "http_status": 403, "reason": "plan_token_cap",
	"message": sprintf(
		"this request may use %d tokens; the %s plan allows %d per request",
		[input.token_estimate.total_tokens, plan, data.tenants.max_request_tokens[plan]],
	),
} if {
	not blocked
	over_cap
}

decision := {
	"allowed": true,
	"headers": {"x-authz-tenant-plan": plan},
} if {
	not blocked
	not over_cap
}
