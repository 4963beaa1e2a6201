/**
 * A gate a fake read waits at while a test holds it shut: how the cache tests put a change in the
 * middle of a read (a read under way when its cache hears of a change must not be kept).
 */
export interface ReadGate {
  /** What a fake read awaits: at once while the gate is open, else until it is opened. */
  passed(): Promise<void>;
  /** Shuts the gate; answers the function that opens it again. */
  hold(): () => void;
}

export function readGate(): ReadGate {
  let shut: Promise<void> | undefined;
  return {
    passed: async () => shut,
    hold() {
      let open!: () => void;
      shut = new Promise((r) => (open = r));
      return () => {
        shut = undefined;
        open();
      };
    },
  };
}
