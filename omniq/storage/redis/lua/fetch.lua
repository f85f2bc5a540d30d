-- Several tasks by id. ARGV: prefix, ids... Returns fetch() fields of those that exist.
local out = {}
for i = 2, #ARGV do fetch(out, ARGV[i]) end
return out
