import { Type } from '@sinclair/typebox';

/**
 * Schemas shared by the routes. Request input is checked against these before a handler runs; a
 * value outside them is a 400 naming the field. Ids are plain bounded strings here: an id that is
 * not one of ours is a 404 from the handler (an unknown pipeline is not a malformed request).
 */

/** An id or name in a path. */
export const Segment = Type.String({ minLength: 1, maxLength: 256 });

/** `/project/:vcs/:org/:repo`. */
export const SlugParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment });

export const IdParams = Type.Object({ id: Segment });

/** A count or index a query or path may carry: a whole number the database can hold. */
export const Int32 = (options: { minimum?: number; maximum?: number } = {}) => Type.Integer({ minimum: options.minimum ?? 0, maximum: options.maximum ?? 2 ** 31 - 1 });

export const PageQuery = Type.Object({ 'page-token': Type.Optional(Type.String({ maxLength: 1000 })) });

/** A pipeline parameter's value. */
export const ParameterValue = Type.Union([Type.String({ maxLength: 64 * 1024 }), Type.Number(), Type.Boolean()]);

/** Pipeline parameters: name → value. */
export const Parameters = Type.Record(Type.String({ maxLength: 256 }), ParameterValue, { maxProperties: 1000 });

/** An optional string that may also be sent as null or "" for "not given". */
export const OptionalText = (maxLength: number) => Type.Optional(Type.Union([Type.String({ maxLength }), Type.Null()]));

/** `x ?? undefined` with "" also meaning not given. */
export function given(value: string | null | undefined): string | undefined {
  return value === null || value === undefined || value === '' ? undefined : value;
}

/** One of these strings; a value outside them is a 400 listing them. */
export const OneOf = <T extends string>(values: readonly T[]) => Type.Unsafe<T>({ type: 'string', enum: [...values] });
