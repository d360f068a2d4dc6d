// The decision payload check, the same subset of JSON Schema as smithers/shared/approval.py
// (type, enum, const, properties, required, additionalProperties: false, items,
// minLength/maxLength, pattern, minimum/maximum, minItems/maxItems), with the same
// messages, so the browser refuses what the gateway would refuse.

const TYPES = {
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
  array: (v) => Array.isArray(v),
  string: (v) => typeof v === "string",
  integer: (v) => typeof v === "number" && Number.isInteger(v),
  number: (v) => typeof v === "number" && Number.isFinite(v),
  boolean: (v) => typeof v === "boolean",
  null: (v) => v === null,
};

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

export function validate(schema, value, path = "payload") {
  const errors = [];
  check(schema || {}, value, path, errors);
  return errors;
}

function check(schema, value, path, errors) {
  if (schema.type && !TYPES[schema.type](value)) {
    errors.push({ path, message: `${path} must be of type ${schema.type}` });
    return;
  }
  if ("const" in schema && !same(value, schema.const)) {
    errors.push({ path, message: `${path} must be ${JSON.stringify(schema.const)}` });
  }
  if (schema.enum && !schema.enum.some((option) => same(option, value))) {
    errors.push({ path, message: `${path} must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}` });
  }
  if (typeof value === "string") {
    if ("minLength" in schema && value.length < schema.minLength)
      errors.push({ path, message: `${path} needs at least ${schema.minLength} characters` });
    if ("maxLength" in schema && value.length > schema.maxLength)
      errors.push({ path, message: `${path} allows at most ${schema.maxLength} characters` });
    if ("pattern" in schema && !new RegExp(schema.pattern, "u").test(value))
      errors.push({ path, message: `${path} must match ${schema.pattern}` });
  }
  if (typeof value === "number") {
    if ("minimum" in schema && value < schema.minimum)
      errors.push({ path, message: `${path} must be >= ${schema.minimum}` });
    if ("maximum" in schema && value > schema.maximum)
      errors.push({ path, message: `${path} must be <= ${schema.maximum}` });
  }
  if (TYPES.object(value)) {
    const props = schema.properties || {};
    for (const name of schema.required || []) {
      if (!(name in value)) errors.push({ path: `${path}.${name}`, message: `${path}.${name} is required` });
    }
    if (schema.additionalProperties === false) {
      for (const name of Object.keys(value).sort()) {
        if (!(name in props)) errors.push({ path: `${path}.${name}`, message: `${path}.${name} is not allowed` });
      }
    }
    for (const [name, sub] of Object.entries(props)) {
      if (name in value) check(sub, value[name], `${path}.${name}`, errors);
    }
  }
  if (Array.isArray(value)) {
    if ("minItems" in schema && value.length < schema.minItems)
      errors.push({ path, message: `${path} needs at least ${schema.minItems} items` });
    if ("maxItems" in schema && value.length > schema.maxItems)
      errors.push({ path, message: `${path} allows at most ${schema.maxItems} items` });
    value.forEach((item, i) => check(schema.items || {}, item, `${path}[${i}]`, errors));
  }
}
