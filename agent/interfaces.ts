// Finds pod interfaces the way any CNI leaves them: veths in this node's network
// namespace whose peer lives in another namespace, whatever they are named.
import { native, type LinkInfo, type LinkWatcher } from "../native/index.js";

export interface PodInterface {
  ifindex: number;
  name: string;
}

export function isPodInterface(link: LinkInfo): boolean {
  return link.kind === "veth" && link.linkNetnsId >= 0;
}

export function listPodInterfaces(netns?: string): PodInterface[] {
  return native().listLinks(netns).filter(isPodInterface).map(({ ifindex, name }) => ({ ifindex, name }));
}

/** Calls `onChange` with the full set of pod interfaces after every netlink link event,
 * and every `resyncMs` in case a netlink message was lost (socket overrun). */
export class InterfaceWatcher {
  private watcher: LinkWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly onChange: (ifaces: PodInterface[]) => void,
    private readonly onError: (err: Error) => void,
    private readonly resyncMs: number,
    private readonly netns?: string,
  ) {}

  start(): void {
    this.watcher = native().watchLinks(() => this.scan(), this.netns);
    this.timer = setInterval(() => this.scan(), this.resyncMs);
    this.timer.unref();
    this.scan();
  }

  scan(): void {
    try {
      this.onChange(listPodInterfaces(this.netns));
    } catch (err) {
      this.onError(err as Error);
    }
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
