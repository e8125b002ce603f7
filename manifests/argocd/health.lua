-- Argo CD health of an agentmem.io AgentMemoryCluster, from the status the operator
-- writes (docs/operator.md). A condition counts only when its observedGeneration is
-- the object's metadata.generation. The first rule that matches decides:
--
--   1. annotation agentmem.io/paused=true                  -> Suspended
--   2. no status, or status.observedGeneration is not the
--      current generation (the operator has not seen it)   -> Progressing
--   3. Degraded=True                                       -> Degraded
--   4. Ready=True                                          -> Healthy
--   5. Rebalancing=True (a rebalance runs or waits)        -> Progressing
--   6. Progressing=True (shards are still becoming ready)  -> Progressing
--   7. anything else (Ready=False or missing, nothing in
--      progress)                                           -> Degraded
--
-- Written for Lua 5.1 (Argo CD's interpreter): no integer division, no goto.

local hs = {}

local function current_condition(conditions, kind, generation)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind and c.observedGeneration ~= nil and c.observedGeneration == generation then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local generation = obj.metadata.generation
local annotations = obj.metadata.annotations or {}
local paused = annotations["agentmem.io/paused"]

if paused ~= nil and string.lower(paused) == "true" then
  hs.status = "Suspended"
  hs.message = "Reconciliation is paused by the annotation agentmem.io/paused"
  return hs
end

local status = obj.status
if status == nil or status.observedGeneration == nil or status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = status.conditions
local degraded = current_condition(conditions, "Degraded", generation)
local ready = current_condition(conditions, "Ready", generation)
local rebalancing = current_condition(conditions, "Rebalancing", generation)
local progressing = current_condition(conditions, "Progressing", generation)

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. message_of(degraded, "see the status")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  return hs
end

if rebalancing ~= nil and rebalancing.status == "True" then
  hs.status = "Progressing"
  hs.message = "Rebalancing: " .. message_of(rebalancing, "in progress")
  return hs
end

if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = message_of(progressing, "Reconciling")
  return hs
end

hs.status = "Degraded"
hs.message = "Not ready for generation " .. tostring(generation) .. ": "
  .. message_of(ready, "no current Ready condition")
return hs
