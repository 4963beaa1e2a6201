// What `POST /graphql-unstable` answers (routes.ts loads this module, and with it graphql, on the
// route's first request).
import {
  execute,
  GraphQLError,
  Kind,
  NoUndefinedVariablesRule,
  NoUnusedVariablesRule,
  parse,
  specifiedRules,
  validate,
  type DocumentNode,
  type ExecutionResult,
  type FieldNode,
  type FragmentDefinitionNode,
  type SelectionSetNode,
} from 'graphql';
import { GyreError } from '../../domain/errors';
import { GRAPHQL_LIMITS, type GraphqlRouteDeps } from './routes';
import { createGraphqlSchema, rootValue } from './schema';

/**
 * The circleci CLI sends some documents that declare variables they never use (`$orgSlug` of
 * `config validate`), or use one they never declare (`$orgId` with `--org-id`); CircleCI's server
 * answers them, so these two rules are left out. An undeclared variable reads as not given.
 */
const RULES = specifiedRules.filter((rule) => rule !== NoUnusedVariablesRule && rule !== NoUndefinedVariablesRule);

/** Checks a parsed document against GRAPHQL_LIMITS; the first limit it passes, as an error. */
function overLimits(document: DocumentNode): GraphQLError | undefined {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  let fields = 0;
  let compilations = 0;
  let deepest = 0;
  const walk = (set: SelectionSetNode | undefined, depth: number, seen: Set<string>, root: boolean): void => {
    if (!set) return;
    deepest = Math.max(deepest, depth);
    if (deepest > GRAPHQL_LIMITS.depth || fields > GRAPHQL_LIMITS.fields) return;
    for (const selection of set.selections) {
      if (selection.kind === Kind.FIELD) {
        fields++;
        if (root && ((selection as FieldNode).name.value === 'buildConfig' || (selection as FieldNode).name.value === 'orbConfig')) compilations++;
        walk(selection.selectionSet, depth + 1, seen, false);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        walk(selection.selectionSet, depth, seen, root);
      } else {
        const name = selection.name.value;
        // A fragment that spreads itself is refused by validation; here it is walked once per path.
        if (seen.has(name)) continue;
        walk(fragments.get(name)?.selectionSet, depth, new Set([...seen, name]), root);
      }
    }
  };
  for (const d of document.definitions) if (d.kind === Kind.OPERATION_DEFINITION) walk(d.selectionSet, 0, new Set(), true);
  if (deepest > GRAPHQL_LIMITS.depth) return new GraphQLError(`The query nests fields more than ${GRAPHQL_LIMITS.depth} deep, which is not allowed.`);
  if (fields > GRAPHQL_LIMITS.fields) return new GraphQLError(`The query selects more than ${GRAPHQL_LIMITS.fields} fields, which is not allowed.`);
  if (compilations > GRAPHQL_LIMITS.compilations) return new GraphQLError('The query asks for more than one buildConfig or orbConfig; send one compilation a request.');
  return undefined;
}

const errorsOnly = (...errors: readonly GraphQLError[]): ExecutionResult => ({ errors });

/** A GraphQL request answered: parsed, bounded, validated and executed against the schema (built once). */
export function createGraphqlAnswer(deps: GraphqlRouteDeps): (body: GraphqlBody) => Promise<ExecutionResult> {
  const schema = createGraphqlSchema();
  return async ({ query, variables, operationName }) => {
    let document: DocumentNode;
    try {
      document = parse(query, { maxTokens: GRAPHQL_LIMITS.tokens, noLocation: false });
    } catch (error) {
      return errorsOnly(error instanceof GraphQLError ? error : new GraphQLError('The query could not be parsed.'));
    }
    const writes = document.definitions.some((d) => d.kind === Kind.OPERATION_DEFINITION && d.operation !== 'query');
    if (writes) return errorsOnly(new GraphQLError("Gyre's GraphQL answers queries only: orbs are published with POST /api/v2/orbs by an instance admin, and namespaces are the first part of an orb's name."));
    const limited = overLimits(document);
    if (limited) return errorsOnly(limited);
    const invalid = validate(schema, document, RULES, { maxErrors: 10 });
    if (invalid.length) return errorsOnly(...invalid);
    const result = await execute({ schema, document, rootValue: rootValue(deps), variableValues: variables ?? undefined, operationName: operationName ?? undefined });
    if (!result.errors) return result;
    // A resolver's own words (GraphQLError, Gyre's errors) go out; anything else says no more than a 500 would.
    const errors = result.errors.map((e) => {
      const cause = e.originalError;
      if (!cause || cause instanceof GraphQLError || cause instanceof GyreError) return e;
      deps.log.error('graphql resolver failed', { error: cause.stack ?? String(cause) });
      return new GraphQLError('Internal error.', { path: e.path, nodes: e.nodes });
    });
    return { ...result, errors };
  };
}

export interface GraphqlBody {
  readonly query: string;
  readonly variables?: Record<string, unknown> | null;
  readonly operationName?: string | null;
}
