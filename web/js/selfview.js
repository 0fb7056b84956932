// The self-view in the call view can be dragged anywhere over the picture (pointer
// events: mouse, pen and touch), and stays inside the window when it is resized or turned.

/** Keep a box of size `w`x`h` at (x, y) inside `W`x`H`, `margin` from the edges. */
export function clampInto(x, y, w, h, W, H, margin = 8) {
  return {
    x: Math.min(Math.max(margin, x), Math.max(margin, W - w - margin)),
    y: Math.min(Math.max(margin, y), Math.max(margin, H - h - margin)),
  };
}

/** Make `video` draggable within `stage`. */
export function makeDraggable(video, stage, win = window) {
  let drag = null;
  const place = (x, y) => {
    const p = clampInto(x, y, video.offsetWidth, video.offsetHeight, stage.clientWidth, stage.clientHeight);
    video.style.left = `${p.x}px`;
    video.style.top = `${p.y}px`;
    video.style.right = 'auto';
  };
  video.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    drag = { dx: e.clientX - video.offsetLeft, dy: e.clientY - video.offsetTop };
    video.setPointerCapture(e.pointerId);
    video.classList.add('dragging');
    e.preventDefault();
  });
  video.addEventListener('pointermove', (e) => {
    if (drag) place(e.clientX - drag.dx, e.clientY - drag.dy);
  });
  const end = () => {
    drag = null;
    video.classList.remove('dragging');
  };
  video.addEventListener('pointerup', end);
  video.addEventListener('pointercancel', end);
  win.addEventListener('resize', () => {
    if (video.style.left) place(video.offsetLeft, video.offsetTop);
  });
}
