// Telling people of new approvals: a line for screen readers (aria-live), and, for those who turn
// it on, a browser notification (asked for only when they click to turn it on).
import { useEffect, useState } from "preact/hooks";
import type { Approval } from "../types";
import { visible } from "../visible";

const KEY = "clearance.notify";

type State = "off" | "on" | "blocked" | "unsupported";

function current(): State {
  if (!("Notification" in window)) return "unsupported";
  if (Notification.permission === "denied") return "blocked";
  return Notification.permission === "granted" && window.localStorage.getItem(KEY) === "on" ? "on" : "off";
}

/** One line of text for a notification or an announcement: hidden characters named, at most `room` long. */
export function line(text: string, room = 120): string {
  const shown = visible(text);
  return shown.length > room ? `${shown.slice(0, room - 1)}…` : shown;
}

export function described(a: Approval): string {
  return `${line(a.tool, 60)} by ${line(a.agent, 60)} in ${line(a.environment, 40)}`;
}

export function useNotifications(): { state: State; toggle: () => Promise<void> } {
  const [state, setState] = useState<State>(current);
  const toggle = async () => {
    if (state === "on") {
      window.localStorage.setItem(KEY, "off");
      setState("off");
      return;
    }
    if (state === "unsupported") return;
    const answer = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
    if (answer === "granted") window.localStorage.setItem(KEY, "on");
    setState(current());
  };
  return { state, toggle };
}

/** A notification for approvals that just arrived, when turned on and the page is not in front. */
export function notify(arrived: Approval[], open: (id: string) => void): void {
  if (current() !== "on" || !arrived.length) return;
  if (document.visibilityState === "visible" && document.hasFocus()) return; // the page itself says so
  const first = arrived[0];
  const title = arrived.length === 1 ? "New approval" : `${arrived.length} new approvals`;
  const note = new Notification(title, { body: `${described(first)}: ${line(first.reason)}`, tag: first.id });
  note.onclick = () => {
    window.focus();
    open(first.id);
    note.close();
  };
}

export function NotifyToggle({ state, toggle }: { state: State; toggle: () => Promise<void> }) {
  if (state === "unsupported") return null;
  return (
    <span class="notify">
      <button type="button" aria-pressed={state === "on"} disabled={state === "blocked"} onClick={() => void toggle()}>
        {state === "on" ? "Notifying of new approvals" : "Notify me of new approvals"}
      </button>
      {state === "blocked" ? (
        <span class="muted"> Notifications are blocked for this site in the browser's settings.</span>
      ) : null}
    </span>
  );
}

/** A polite live region: each new message is read once. */
export function Announcer({ message }: { message: { text: string; at: number } }) {
  const [shown, setShown] = useState("");
  useEffect(() => {
    setShown(""); // cleared first, so the same words twice are read twice
    const timer = window.setTimeout(() => setShown(message.text), 100);
    return () => window.clearTimeout(timer);
  }, [message.at]);
  return (
    <p class="visually-hidden" aria-live="polite" aria-atomic="true" data-announcer="">
      {shown}
    </p>
  );
}
