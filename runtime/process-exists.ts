/**
 * Whether a process of this pid exists on this machine (in this pid namespace), whoever owns it:
 * what the directories named for their process (log spools, the step launcher's, the file
 * helper's bundle) are judged by before a later process removes them. A pid reused since is taken
 * for its old process, so a leftover waits for a later start rather than being removed too soon.
 */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
