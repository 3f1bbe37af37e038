// The API's JSON forms: the server's own declarations (controlplane/ui), imported as types
// only, so the browser and the server cannot disagree on a field.
export type { MapJson, MapDeltaJson, MapEdgeJson, MapNodeJson, VerdictState, NodeKindName } from "../../controlplane/ui/map-json.js";
export type { SelectingPolicy, DecidingPolicy } from "../../controlplane/ui/details.js";
export type { WhatIfJson, WhatIfEdgeJson, WhatIfChange, SuggestionsJson, SuggestedPolicyJson } from "../../controlplane/ui/whatif.js";
