-- Record times: whole milliseconds since the epoch (the most compact form of a hash field).
-- Scripts take seconds from Python and store milliseconds.
local function ms(seconds)
  return string.format('%d', math.floor(tonumber(seconds) * 1000 + 0.5))
end
-- A stored time in seconds (records written before times were milliseconds hold seconds).
local function seconds(stored)
  if not stored then return nil end
  if string.find(stored, '.', 1, true) then return tonumber(stored) end
  return tonumber(stored) / 1000
end
