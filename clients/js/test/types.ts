// Compiled (not run) by tests/it/js_client.rs with `tsc --strict`: the event
// listeners are typed by event name.
import { HeraldClient } from "../src/herald.js";

const c = new HeraldClient({ url: "http://127.0.0.1:7400", user: 1 });
c.addEventListener("notification", (e) => {
  const id: string = e.detail.id;
  const count: number = e.detail.count;
  void id;
  void count;
});
c.addEventListener("state", (e) => {
  const s: "connecting" | "open" | "reconnecting" | "closed" = e.detail;
  void s;
});
c.addEventListener("error", (e) => {
  const code: string = e.detail.code;
  void code;
});
c.addEventListener("unread", (e) => {
  // @ts-expect-error: an unread count is a number, not a string
  const wrong: string = e.detail;
  void wrong;
});
// Any other name still takes a plain listener.
c.addEventListener("custom", (e: Event) => void e);
