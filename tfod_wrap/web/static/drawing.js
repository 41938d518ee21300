// Drawing the detections: boxes with labels and scores on the overlay canvas over the camera or image, and the
// list below it.

const COLORS = ["#3fb950", "#58a6ff", "#f0883e", "#db61a2", "#e3b341", "#a371f7", "#56d4dd", "#ff7b72"];

// Where the picture lies inside its element (object-fit: contain may letterbox it).
function contentRect(element) {
  const width = element.clientWidth;
  const height = element.clientHeight;
  const naturalWidth = element.videoWidth || element.naturalWidth || width;
  const naturalHeight = element.videoHeight || element.naturalHeight || height;
  const scale = Math.min(width / naturalWidth, height / naturalHeight);
  const shownWidth = naturalWidth * scale;
  const shownHeight = naturalHeight * scale;
  return { x: (width - shownWidth) / 2, y: (height - shownHeight) / 2, width: shownWidth, height: shownHeight };
}

// The canvas at the element's size in device pixels, cleared; its 2D context in CSS pixels.
function clearedContext(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  return context;
}

function drawBox(context, area, detection) {
  const [ymin, xmin, ymax, xmax] = detection.box;
  const x = area.x + xmin * area.width;
  const y = area.y + ymin * area.height;
  const color = COLORS[(detection.classId - 1 + COLORS.length) % COLORS.length];
  context.strokeStyle = color;
  context.strokeRect(x, y, (xmax - xmin) * area.width, (ymax - ymin) * area.height);
  const label = `${detection.name} ${(detection.score * 100).toFixed(0)}%`;
  const labelWidth = context.measureText(label).width + 8;
  const labelY = y >= 18 ? y - 18 : y;
  context.fillStyle = color;
  context.fillRect(x - 1, labelY, labelWidth, 18);
  context.fillStyle = "#0a0c0f";
  context.fillText(label, x + 3, labelY + 2);
}

// The detections' boxes on `canvas`, over the picture of `element` (the video or the image).
export function drawDetections(canvas, element, detections) {
  const width = element.clientWidth;
  const height = element.clientHeight;
  const context = clearedContext(canvas, width, height);
  if (!width || !height) return;
  const area = contentRect(element);
  context.lineWidth = 2;
  context.font = "600 13px system-ui, sans-serif";
  context.textBaseline = "top";
  for (const detection of detections) drawBox(context, area, detection);
}

// The detections as list items (the first 20), or a line saying there are none above the threshold.
export function listDetections(list, detections, threshold) {
  list.textContent = "";
  if (!detections.length) {
    const item = document.createElement("li");
    item.className = "none";
    item.textContent = `none above ${threshold.toFixed(2)}`;
    list.appendChild(item);
    return;
  }
  for (const detection of detections.slice(0, 20)) {
    const item = document.createElement("li");
    item.textContent = `${detection.name} ${detection.score.toFixed(2)}`;
    list.appendChild(item);
  }
}
