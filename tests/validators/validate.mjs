// The reference validators on Herald's contracts (run by tests/openapi.rs):
// @asyncapi/parser on the AsyncAPI document, swagger-parser on the OpenAPI
// document a node serves. Prints each error; exit 1 when there is one.
//   node validate.mjs docs/asyncapi.yaml openapi.json
import { Parser } from "@asyncapi/parser";
import SwaggerParser from "@apidevtools/swagger-parser";
import { readFileSync } from "node:fs";
const [asyncFile, openFile] = process.argv.slice(2);
let bad = 0;
const parser = new Parser();
const { diagnostics } = await parser.parse(readFileSync(asyncFile, "utf8"));
for (const d of diagnostics) if (d.severity === 0) { bad++; console.log(`asyncapi: ${d.message} at ${d.path.join(".")}`); }
try { await SwaggerParser.validate(JSON.parse(readFileSync(openFile, "utf8"))); } catch (e) { bad++; console.log(`openapi: ${e.message}`); }
console.log(bad ? `${bad} error(s)` : "valid");
process.exit(bad ? 1 : 0);
