/**
 * Glossary. These words mean exactly this everywhere in Gyre's code, API and docs.
 *
 * - project: a git repository registered with Gyre, named by its slug `gh/<org>/<repo>`.
 * - pipeline: one run of a project's configuration for one revision (a push, an API call or a
 *   schedule). It has a number that counts up per project, and holds one or more workflows.
 * - config: the `.circleci/config.yml` of that revision; the compiler turns it into a plan.
 * - plan: the compiled, fully expanded form of the config for one trigger (branch or tag, pipeline
 *   parameters): the workflows and jobs that will run, each job with its executor and steps.
 * - workflow: a directed acyclic graph of jobs inside a pipeline, advanced by the conductor.
 * - job: one node of a workflow. It has a number that counts up per project (CIRCLE_BUILD_NUM).
 *   A build job becomes `parallelism` tasks; an approval job waits for a person.
 * - task: one unit of execution of a job (one per parallel node). Tasks sit in the dispatcher's
 *   queue until a driver's agent claims them.
 * - step: one entry of a job's `steps` (run, checkout, ...). A task runs its steps in order.
 * - lease: the right to work on a claimed task, with an id and an expiry. Every write from an agent
 *   carries the lease id; writes under a stale lease are refused (fencing). Heartbeats extend it.
 * - attempt: one claim of a task. An expired lease ends the attempt as an infrastructure failure
 *   and, within the retry limit, queues the task again.
 * - agent: the program that runs a task's steps and reports their output and results.
 * - driver: what starts agents: the built-in runner (in-process slots), self-hosted runners, Nomad.
 * - executor: where the agent runs steps: a shell on the host (as a build uid of the task's own, in a
 *   bubblewrap sandbox, or without isolation), or containers (docker). See docs/security.md.
 * - resource class: the named size/kind of machine a job asks for; the dispatcher queues by it.
 * - schedule: what starts pipelines by the clock: a project's schedule of the v2 API (a timetable
 *   in UTC, an actor, parameters with a branch or tag), or a workflow's legacy `triggers: schedule`
 *   cron (a scheduled workflow). A tick is one time a schedule fires; it is a row, claimed once.
 * - context: a named, organisation-level set of secret environment variables.
 * - organisation: `gh/<org>`, the owner of projects; made with its first project or explicitly.
 * - user: someone who calls the API with a token; the instance admin may do everything.
 * - organisation role / project role: what a user may do in an organisation (admin, member,
 *   viewer) or on a project (admin, write, read). Not a process role (runtime/roles: api, conductor,
 *   …), which is what a `gyre server` process runs.
 * - permission: what a route needs (`project:trigger`); runtime/domain/permissions.ts says which
 *   roles hold it.
 * - API token: a personal token (acts as its user) or a project token (acts on one project with a
 *   scope, read or trigger); stored as a hash, shown once.
 * - audit record: one mutating action, or a refused or failed attempt at one: who, what, which
 *   target, when, from where, with what result.
 */
export {};
