// The control socket's requests, answered by the controller (see
// control_server.h for the protocol and docs/levers.md for the requests).

#ifndef MOE_APPS_MOECTLD_CONTROL_HANDLER_H_
#define MOE_APPS_MOECTLD_CONTROL_HANDLER_H_

#include <nlohmann/json.hpp>

#include "moe/controller/controller.h"
#include "moe/controller/levers.h"

namespace moe::controller {

// {"op": "status" [, "engine": E]} -> {"ok": true, "engines": [...]};
// {"op": "pause"|"resume"|"pin"|"unpin"|"mode", "engine": E, "reason": R,
//  "knob": K, "value": V, "for_ms": N, "mode": M} -> {"ok": true, "message",
//  "action_id" [, "decision_id"]}; any failure -> {"ok": false, "error",
//  "code"} with the StatusCode's name ("invalid_argument", "not_found", ...).
nlohmann::json HandleControlRequest(Controller& controller, const nlohmann::json& request,
                                    const Caller& caller);

// One engine's status as the reply carries it.
nlohmann::json EngineStatusJson(const EngineStatus& status);

}  // namespace moe::controller

#endif  // MOE_APPS_MOECTLD_CONTROL_HANDLER_H_
