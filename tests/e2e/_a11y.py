"""Accessibility checks a browser test runs on whatever page is showing.

`contrast(page)` computes, from computed styles, the contrast of every visible piece of text
against what is painted behind it (WCAG 2 relative luminance, opacity and translucent layers
composited), and returns each one under 4.5:1. `unnamed(page)` asks Chromium's accessibility
tree (the browser's own accessible-name computation, over CDP) for every control without a name.
Both look at the page as it is, not at a list of selectors, so pages other people change are
checked too.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

MINIMUM = 4.5

# Runs in the page. Colours are normalised by painting them on a 1x1 canvas, so any CSS colour
# syntax the browser computes (rgb(), color(srgb …), oklch()) reads back as sRGB bytes.
_CONTRAST = """
(minimum) => {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const cache = new Map();
  const rgba = (css) => {
    if (cache.has(css)) return cache.get(css);
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = "rgba(0, 0, 0, 0)";
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
    const out = [r, g, b, a / 255];
    cache.set(css, out);
    return out;
  };
  const over = (top, under) => {  // `top` (with alpha) painted over the opaque `under`
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a));
  };
  const mix = (inside, under, opacity) => [0, 1, 2].map((i) => inside[i] * opacity + under[i] * (1 - opacity));
  const channel = (c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
  };
  const luminance = (rgb) => 0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2]);
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  // The text colour and the colour behind it as painted: each ancestor's background composited
  // from the canvas (white) down, and each opacity group blended over what lies beneath it.
  const painted = (el, colour) => {
    const chain = [];
    for (let n = el; n && n.nodeType === 1; n = n.parentElement) chain.unshift(n);
    let unknown = false;
    const go = (k, under) => {
      const style = getComputedStyle(chain[k]);
      if (style.backgroundImage && style.backgroundImage !== "none") unknown = true;
      const bg = over(rgba(style.backgroundColor), under);
      let result = k === chain.length - 1 ? [over(rgba(colour), bg), bg] : go(k + 1, bg);
      const opacity = parseFloat(style.opacity);
      if (opacity < 1) result = result.map((c) => mix(c, under, opacity));
      return result;
    };
    const [fg, bg] = go(0, [255, 255, 255]);
    return { fg, bg, unknown };
  };
  const shown = (rect) => rect.width > 1 && rect.height > 1;
  const describe = (el) => {
    const parts = [];
    for (let n = el; n && n.nodeType === 1 && parts.length < 4; n = n.parentElement) {
      parts.unshift(n.tagName.toLowerCase() + (n.classList.length ? "." + [...n.classList].join(".") : ""));
    }
    return parts.join(" > ");
  };
  const hex = (rgb) => "#" + rgb.map((c) => Math.round(c).toString(16).padStart(2, "0")).join("");
  const found = [];
  let checked = 0;
  const check = (el, text, colour) => {
    checked += 1;
    const { fg, bg, unknown } = painted(el, colour);
    if (unknown) return;
    const r = ratio(fg, bg);
    if (r < minimum) {
      const shown = text.trim().slice(0, 60);
      found.push({ text: shown, ratio: Math.round(r * 100) / 100, fg: hex(fg), bg: hex(bg), where: describe(el) });
    }
  };
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("script, style, template, noscript")) continue;
    const style = getComputedStyle(el);
    if (style.visibility !== "visible" || !el.getClientRects().length) continue;
    if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) {
      if (["hidden", "checkbox", "radio", "range", "color", "file", "image"].includes(el.type)) continue;
      if (!shown(el.getBoundingClientRect())) continue;
      if (el.value) check(el, el.value, style.color);
      else if (el.placeholder) check(el, el.placeholder, getComputedStyle(el, "::placeholder").color);
      continue;
    }
    if (el instanceof HTMLSelectElement) {
      const chosen = el.selectedOptions[0];
      if (chosen && shown(el.getBoundingClientRect())) check(el, chosen.text, style.color);
      continue;
    }
    if (el instanceof SVGTextElement || el instanceof SVGTSpanElement) {
      if (el.textContent.trim() && shown(el.getBoundingClientRect())) check(el, el.textContent, style.fill);
      continue;
    }
    for (const node of el.childNodes) {
      if (node.nodeType !== 3 || !node.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      if (![...range.getClientRects()].some(shown)) continue;
      check(el, node.textContent, style.color);
      break;
    }
  }
  return { checked, found };
}
"""

_CONTROLS = {
    "button",
    "link",
    "textbox",
    "searchbox",
    "combobox",
    "listbox",
    "checkbox",
    "radio",
    "switch",
    "slider",
    "spinbutton",
    "tab",
    "menuitem",
    "menuitemcheckbox",
    "menuitemradio",
    "treeitem",
    "dialog",
    "alertdialog",
}


def contrast(page: Page) -> list[dict[str, Any]]:
    """Every visible text under 4.5:1 on the page now (its text, ratio, colours, where)."""
    result = page.evaluate(_CONTRAST, MINIMUM)
    assert result["checked"] > 0, "no text was found to check: is the page blank?"
    return list(result["found"])


def unnamed(page: Page) -> list[str]:
    """Every control (button, link, field, tab, dialog…) that has no accessible name, as HTML."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("Accessibility.enable")
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
        missing = []
        for node in nodes:
            role = (node.get("role") or {}).get("value")
            name = str((node.get("name") or {}).get("value") or "").strip()
            if node.get("ignored") or role not in _CONTROLS or name:
                continue
            html = f"<{role} without a name>"
            if "backendDOMNodeId" in node:
                target = cdp.send("DOM.resolveNode", {"backendNodeId": node["backendDOMNodeId"]})["object"]
                html = cdp.send(
                    "Runtime.callFunctionOn",
                    {
                        "objectId": target["objectId"],
                        "functionDeclaration": "function () { return this.outerHTML.slice(0, 160); }",
                        "returnByValue": True,
                    },
                )["result"]["value"]
            missing.append(f"{role}: {html}")
        return missing
    finally:
        cdp.detach()
