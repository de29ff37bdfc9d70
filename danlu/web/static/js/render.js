// Message bubbles: plain text (never HTML from a model: only textContent), ``` fenced blocks and `inline` code.

function appendProse(element, text) {
  text.split(/`([^`\n]+)`/).forEach((piece, index) => {
    if (index % 2 === 0) {
      if (piece) element.append(document.createTextNode(piece));
      return;
    }
    const code = document.createElement("code");
    code.textContent = piece;
    element.append(code);
  });
}

export function renderText(element, text) {
  element.replaceChildren();
  const parts = text.split("```");
  parts.forEach((part, index) => {
    if (index % 2 === 0) {  // prose; the line breaks that only frame a code block are the block's margins
      const trimmed = part.replace(index > 0 ? /^\n+/ : /^/, "").replace(index < parts.length - 1 ? /\n+$/ : /$/, "");
      appendProse(element, trimmed);
      return;
    }
    const newline = part.indexOf("\n");
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    const body = newline >= 0 && /^[\w+#.-]*$/.test(part.slice(0, newline)) ? part.slice(newline + 1) : part;
    code.textContent = body.replace(/\n$/, "");  // the first line named the language
    pre.append(code);
    element.append(pre);
  });
}

// A bubble for one message; returns {bubble, body, meta} so a stream can fill the body as it arrives.
export function bubble(container, role, text = "") {
  const bubble = document.createElement("div");
  bubble.className = `msg ${role}`;
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("div");
  meta.className = "meta";
  bubble.append(body, meta);
  renderText(body, text);
  container.querySelector(".empty")?.remove();
  container.append(bubble);
  container.scrollTop = container.scrollHeight;
  return { bubble, body, meta };
}

export function follow(container) {
  const nearBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 120;
  if (nearBottom) container.scrollTop = container.scrollHeight;
}
