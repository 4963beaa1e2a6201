import { Type } from '@sinclair/typebox';
import type { Logger } from '../../logger';
import type { GyreApp } from '../http-app';
import type { createGraphqlAnswer } from './answer';
import type { GraphqlDeps } from './schema';

export interface GraphqlRouteDeps extends GraphqlDeps {
  /** Largest body the route takes: a config of the compiler's largest size in `variables`, as JSON. */
  readonly maxBodyBytes: number;
  readonly log: Logger;
}

/** Bounds on a query document, so a hostile one costs little: its text, tokens, depth and fields. */
export const GRAPHQL_LIMITS = {
  queryChars: 20_000,
  tokens: 5_000,
  depth: 8,
  fields: 300,
  /** `buildConfig` and `orbConfig` fields in one document (each is a compilation). */
  compilations: 1,
} as const;

/**
 * `POST /graphql-unstable`, where the circleci CLI sends its GraphQL (`--host <gyre>`): the
 * operations of schema.ts, with the caller's API token (the CLI sends it as a bare
 * `Authorization` header). As GraphQL over HTTP answers, a query that cannot run is still a 200,
 * with `errors` saying why: the CLI reads them. Never a crash: a document that does not parse,
 * passes a limit, names an unknown field or writes (a mutation) is an error in the answer.
 */
export function registerGraphqlRoutes(app: GyreApp, deps: GraphqlRouteDeps): void {
  let answer: ReturnType<typeof createGraphqlAnswer> | undefined;
  app.post(
    '/graphql-unstable',
    {
      // Reading and compiling change nothing: not audited.
      config: { permission: 'authenticated', action: false },
      bodyLimit: deps.maxBodyBytes,
      schema: {
        body: Type.Object({
          query: Type.String({ maxLength: GRAPHQL_LIMITS.queryChars }),
          variables: Type.Optional(Type.Union([Type.Record(Type.String({ maxLength: 256 }), Type.Unknown(), { maxProperties: 50 }), Type.Null()])),
          operationName: Type.Optional(Type.Union([Type.String({ maxLength: 256 }), Type.Null()])),
        }),
      },
    },
    async (request) => {
      // graphql (the library) and the schema load on the first request, not with the server (issue #19).
      answer ??= (require('./answer') as { createGraphqlAnswer: typeof createGraphqlAnswer }).createGraphqlAnswer(deps);
      return answer(request.body);
    },
  );
}
