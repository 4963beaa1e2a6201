import { createHash } from 'node:crypto';
import { buildSchema, GraphQLError, GraphQLScalarType, Kind, type GraphQLSchema, type ValueNode } from 'graphql';
import { pipelineValuesFrom } from '../../config/api-routes';
import { parseSemver, validateOrbPublish, type OrbRegistry } from '../../config/orb-registry';
import type { CompileResult, TriggerContext } from '../../config/plan';

/**
 * The GraphQL schema of `/graphql-unstable`, covering only what the circleci CLI asks a server
 * host (CircleCI-Public/circleci-cli, `api/api.go`, `config/v1_api_client.go`,
 * `api/orb/v2_client.go`): `buildConfig` (config validate / process on hosts without
 * `/api/v2/compile-config-with-defaults`), `orbConfig` (orb validate / process), and the orb
 * registry's reads (`orbVersion` for orb source and info, `orbs` and `registryNamespace` for
 * orb list, `orb` for the latest version and existence, `orbCategories`). Nothing writes:
 * orbs are published with `POST /api/v2/orbs` by an instance admin.
 */
const SDL = /* GraphQL */ `
  scalar UUID
  "A pipeline value: a string, number or boolean."
  scalar PipelineValue

  input StringKeyVal {
    key: String!
    val: PipelineValue
  }

  enum OrbListViewType {
    PUBLIC_ONLY
    PRIVATE_ONLY
    PUBLIC_AND_PRIVATE
  }

  type ConfigError {
    message: String!
  }

  type ConfigResponse {
    valid: Boolean!
    errors: [ConfigError!]!
    sourceYaml: String!
    outputYaml: String!
  }

  type Namespace {
    id: UUID!
    name: String!
  }

  type OrbStatistics {
    last30DaysBuildCount: Int!
    last30DaysProjectCount: Int!
    last30DaysOrganizationCount: Int!
  }

  type OrbCategory {
    id: UUID!
    name: String!
  }

  type OrbVersion {
    id: UUID!
    version: String!
    source: String!
    createdAt: String!
    orb: Orb!
  }

  type Orb {
    id: UUID!
    name: String!
    createdAt: String!
    isPrivate: Boolean!
    namespace: Namespace!
    statistics: OrbStatistics!
    categories: [OrbCategory!]!
    "Newest first; development versions are not listed."
    versions(count: Int): [OrbVersion!]!
  }

  type PageInfo {
    hasNextPage: Boolean!
  }

  type OrbEdge {
    cursor: String!
    node: Orb!
  }

  type OrbConnection {
    totalCount: Int!
    edges: [OrbEdge!]!
    pageInfo: PageInfo!
  }

  type RegistryNamespace {
    id: UUID!
    name: String!
    orbs(first: Int, after: String, view: OrbListViewType): OrbConnection!
  }

  type OrbCategoryEdge {
    cursor: String!
    node: OrbCategory!
  }

  type OrbCategoryConnection {
    totalCount: Int!
    edges: [OrbCategoryEdge!]!
    pageInfo: PageInfo!
  }

  type Query {
    buildConfig(configYaml: String!, pipelineValues: [StringKeyVal!], pipelineParametersJson: String, next: Boolean, orgId: UUID, orgSlug: String): ConfigResponse!
    orbConfig(orbYaml: String!, ownerId: UUID): ConfigResponse!
    orbVersion(orbVersionRef: String!): OrbVersion
    orb(name: String!): Orb
    orbs(first: Int, after: String, certifiedOnly: Boolean, view: OrbListViewType): OrbConnection!
    registryNamespace(name: String): RegistryNamespace
    orbCategories(first: Int, after: String): OrbCategoryConnection!
    orbCategoryByName(name: String!): OrbCategory
  }
`;

/** Most orbs one page lists, and most versions one orb lists (the CLI asks for 20 and 200). */
const MAX_PAGE = 100;
const MAX_VERSIONS = 200;

function scalarValue(value: unknown, what: string): string | number | boolean {
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value;
  throw new GraphQLError(`${what} must be a string, number or boolean`);
}

function parseUuid(v: unknown): string {
  if (typeof v === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v)) return v;
  throw new GraphQLError(`a UUID must look like 123e4567-e89b-12d3-a456-426614174000, not ${String(JSON.stringify(v)).slice(0, 60)}`);
}

const scalars: Record<string, GraphQLScalarType> = {
  UUID: new GraphQLScalarType({
    name: 'UUID',
    serialize: (v) => String(v),
    parseValue: parseUuid,
    parseLiteral: (ast: ValueNode): string => {
      if (ast.kind === Kind.STRING) return parseUuid(ast.value);
      throw new GraphQLError('a UUID must be a string');
    },
  }),
  PipelineValue: new GraphQLScalarType({
    name: 'PipelineValue',
    serialize: (v) => v,
    parseValue: (v) => scalarValue(v, 'a pipeline value (val)'),
    parseLiteral: (ast: ValueNode): string | number | boolean => {
      if (ast.kind === Kind.STRING || ast.kind === Kind.BOOLEAN) return ast.value;
      if (ast.kind === Kind.INT || ast.kind === Kind.FLOAT) return Number(ast.value);
      throw new GraphQLError('a pipeline value (val) must be a string, number or boolean');
    },
  }),
};

/** Builds the schema once: SDL for the types, these scalars for the values. */
export function createGraphqlSchema(): GraphQLSchema {
  const schema = buildSchema(SDL);
  for (const [name, scalar] of Object.entries(scalars)) {
    const type = schema.getType(name) as GraphQLScalarType;
    type.serialize = scalar.serialize;
    type.parseValue = scalar.parseValue;
    type.parseLiteral = scalar.parseLiteral;
  }
  return schema;
}

export interface GraphqlDeps {
  readonly orbs: OrbRegistry;
  /** Compiles a config (with its orbs, within the compilation budgets, off the event loop). */
  readonly compile: (source: string, trigger: TriggerContext) => Promise<CompileResult>;
}

/** A stable id for a name Gyre keeps without one (orbs, namespaces, versions): a UUID-shaped hash. */
function idOf(kind: string, name: string): string {
  const h = createHash('sha256').update(`${kind}\u0000${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

interface OrbRow {
  readonly name: string;
  readonly version: string;
  readonly createdAt: string;
}

/** One request's view of the orb registry: listed once, on first use. */
function registryView(orbs: OrbRegistry) {
  let listed: Promise<Map<string, OrbRow[]>> | undefined;
  const all = () =>
    (listed ??= orbs.list().then((rows) => {
      const byName = new Map<string, OrbRow[]>();
      // Newest first; development versions resolve by name only and are not listed, as on CircleCI.
      for (const row of [...rows].reverse()) {
        if (!parseSemver(row.version)) continue;
        if (!byName.has(row.name)) byName.set(row.name, []);
        byName.get(row.name)!.push(row);
      }
      return new Map([...byName.entries()].sort((a, b) => a[0].localeCompare(b[0])));
    }));
  return { all };
}

type View = ReturnType<typeof registryView>;

function orbObject(view: View, orbs: OrbRegistry, name: string, versions: OrbRow[]) {
  const namespace = name.split('/')[0];
  return {
    id: idOf('orb', name),
    name,
    createdAt: versions.length ? versions[versions.length - 1].createdAt : new Date(0).toISOString(),
    isPrivate: false,
    namespace: { id: idOf('namespace', namespace), name: namespace },
    statistics: { last30DaysBuildCount: 0, last30DaysProjectCount: 0, last30DaysOrganizationCount: 0 },
    categories: [],
    versions: ({ count }: { count?: number | null }) => {
      const n = Math.max(0, Math.min(count ?? MAX_VERSIONS, MAX_VERSIONS));
      return versions.slice(0, n).map((v) => versionObject(view, orbs, name, v.version, v.createdAt));
    },
  };
}

function versionObject(view: View, orbs: OrbRegistry, name: string, version: string, createdAt: string, source?: string) {
  return {
    id: idOf('orb-version', `${name}@${version}`),
    version,
    createdAt,
    source: async () => source ?? (await orbs.resolve(name, version))?.source ?? '',
    orb: async () => orbObject(view, orbs, name, (await view.all()).get(name) ?? []),
  };
}

function connection(view: View, orbs: OrbRegistry, entries: [string, OrbRow[]][], first: number | null | undefined, after: string | null | undefined) {
  const size = Math.max(0, Math.min(first ?? 20, MAX_PAGE));
  const start = after ? entries.findIndex(([name]) => name > after) : 0;
  const from = start < 0 ? entries.length : start;
  const page = entries.slice(from, from + size);
  return {
    totalCount: entries.length,
    edges: page.map(([name, versions]) => ({ cursor: name, node: orbObject(view, orbs, name, versions) })),
    pageInfo: { hasNextPage: from + size < entries.length },
  };
}

/** The root resolvers of one request. */
export function rootValue(deps: GraphqlDeps) {
  const view = registryView(deps.orbs);
  const configResponse = (source: string, result: CompileResult) =>
    result.ok
      ? { valid: true, errors: [], sourceYaml: source, outputYaml: result.compiledYaml }
      : {
          valid: false,
          errors: result.problems.map((p) => ({ message: `${p.line ? `line ${p.line}:${p.column ?? 1}: ` : ''}${p.path ? `${p.path}: ` : ''}${p.message}` })),
          sourceYaml: source,
          outputYaml: '',
        };

  return {
    async buildConfig(args: { configYaml: string; pipelineValues?: { key: string; val: unknown }[] | null; pipelineParametersJson?: string | null }) {
      const parameters: Record<string, string | number | boolean> = {};
      if (args.pipelineParametersJson) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(args.pipelineParametersJson);
        } catch {
          throw new GraphQLError('pipelineParametersJson must be a JSON object of parameter name to value');
        }
        if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new GraphQLError('pipelineParametersJson must be a JSON object of parameter name to value');
        if (Object.keys(parsed).length > 1000) throw new GraphQLError('pipelineParametersJson may hold at most 1000 parameters');
        for (const [name, value] of Object.entries(parsed)) parameters[name] = scalarValue(value, `pipeline parameter '${name.slice(0, 100)}'`);
      }
      const values = (args.pipelineValues ?? []).slice(0, 200);
      const pipeline = pipelineValuesFrom(Object.fromEntries(values.map((kv) => [kv.key, kv.val])));
      const result = await deps.compile(args.configYaml, { ...(pipeline.tag ? { tag: pipeline.tag } : { branch: pipeline.branch ?? 'main' }), parameters, pipeline });
      return configResponse(args.configYaml, result);
    },
    orbConfig(args: { orbYaml: string }) {
      try {
        validateOrbPublish('gyre/orb', '0.0.0', args.orbYaml);
      } catch (error) {
        return { valid: false, errors: [{ message: (error as Error).message }], sourceYaml: args.orbYaml, outputYaml: '' };
      }
      // Gyre expands orbs where a config uses them; the orb is given back as it was sent.
      return { valid: true, errors: [], sourceYaml: args.orbYaml, outputYaml: args.orbYaml };
    },
    async orbVersion(args: { orbVersionRef: string }) {
      const m = /^([a-z0-9][a-z0-9_-]*\/[a-z0-9][a-z0-9_-]*)@([\w.:-]{1,100})$/i.exec(args.orbVersionRef);
      if (!m) throw new GraphQLError(`orbVersionRef ${JSON.stringify(args.orbVersionRef.slice(0, 200))} must be namespace/orb@version (a version, x.y, x or volatile)`);
      const found = await deps.orbs.resolve(m[1], m[2]);
      if (!found) return null;
      const row = ((await view.all()).get(m[1]) ?? []).find((v) => v.version === found.version);
      return versionObject(view, deps.orbs, m[1], found.version, row?.createdAt ?? new Date(0).toISOString(), found.source);
    },
    async orb(args: { name: string }) {
      const versions = (await view.all()).get(args.name);
      return versions ? orbObject(view, deps.orbs, args.name, versions) : null;
    },
    // Every orb here was imported by an instance admin: all of them count as certified.
    async orbs(args: { first?: number | null; after?: string | null; view?: string | null }) {
      if (args.view === 'PRIVATE_ONLY') return { totalCount: 0, edges: [], pageInfo: { hasNextPage: false } };
      return connection(view, deps.orbs, [...(await view.all()).entries()], args.first, args.after);
    },
    async registryNamespace(args: { name?: string | null }) {
      if (!args.name) return null;
      const name = args.name;
      const entries = [...(await view.all()).entries()].filter(([orb]) => orb.split('/')[0] === name);
      if (!entries.length) return null;
      return {
        id: idOf('namespace', name),
        name,
        orbs: (a: { first?: number | null; after?: string | null; view?: string | null }) =>
          a.view === 'PRIVATE_ONLY' ? { totalCount: 0, edges: [], pageInfo: { hasNextPage: false } } : connection(view, deps.orbs, entries, a.first, a.after),
      };
    },
    orbCategories: () => ({ totalCount: 0, edges: [], pageInfo: { hasNextPage: false } }),
    orbCategoryByName: () => null,
  };
}
