import { createNotifierSenders } from '../notifications/senders';
import { sweepDeliveries } from '../notifications/sql/notifications';
import { createOutboxSender } from '../outbox/sender';
import { every, type Role } from './role';

/**
 * `notifier`: sends what workflows' and jobs' ends tell the outside world (runtime/notifications,
 * docs/notifications.md): projects' outbound webhooks (`workflow-completed`, `job-completed`,
 * signed as CircleCI signs them), emails through the SMTP server (GYRE_SMTP_URL) and
 * Slack-compatible messages, on failed and on fixed workflows. The conductor writes each to the
 * outbox in the transaction that ends the workflow or job; this role's sender claims only the
 * notifier's kinds (`webhook`, `notification-email`, `notification-slack`) and posts them with
 * retries and backoff, any number of replicas each delivery once (`FOR UPDATE SKIP LOCKED`). It
 * also deletes finished deliveries from the log after GYRE_NOTIFICATION_KEEP_DAYS, hourly.
 */
export const notifierRole: Role = {
  name: 'notifier',
  async start(core) {
    const { store, settings } = core;
    const log = core.log.child({ role: 'notifier' });
    const senders = createNotifierSenders({ store, box: core.secretBox, settings: settings.notifications, log });
    const outbox = createOutboxSender({ store, log: log.child({ outbox: 'sender' }), handlers: senders.handlers });
    await outbox.start();
    const onError = (error: unknown) => log.error('delivery log sweep failed', { error: (error as Error).message });
    const stopSweep = every(3600_000, async () => {
      const swept = await sweepDeliveries(store, settings.notifications.keepDays);
      if (swept > 0) log.info('finished notification deliveries deleted', { deliveries: swept, older_than_days: settings.notifications.keepDays });
    }, onError);
    return {
      async stop() {
        stopSweep();
        await outbox.stop();
        senders.close();
      },
    };
  },
};
