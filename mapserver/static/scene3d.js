// The 3D page: a scene's 3D Tiles in CesiumJS, served from this OneMap under the caller's
// grants. An embedding key in this page's fragment (#key=...) is sent with every request
// for data; a fragment never reaches the server, so the page itself needs no key.
"use strict";

const pageKey = new URLSearchParams(location.hash.slice(1)).get("key");
const panel = document.getElementById("picked");

function withQuery(url, extra) {
  const u = new URL(url, location.href);
  if (pageKey) u.searchParams.set("key", pageKey);
  for (const [k, v] of Object.entries(extra || {})) if (v) u.searchParams.set(k, v);
  return u.toString();
}

function show(feature) {
  if (!(feature instanceof Cesium.Cesium3DTileFeature)) {
    panel.innerHTML = '<p class="hint">Nothing picked.</p>';
    return;
  }
  const rows = feature.getPropertyIds()
    .map((id) => [id, feature.getProperty(id)])
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([id, v]) => `<tr><th>${escape(id)}</th><td>${escape(String(v))}</td></tr>`);
  panel.innerHTML = `<table class="attrs">${rows.join("")}</table>`;
}

function escape(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

async function main() {
  if (typeof Cesium === "undefined") {
    document.getElementById("map").innerHTML =
      '<p class="hint">CesiumJS is not installed on this server (ONEMAP_CESIUM_DIR); ' +
      "load the tileset URLs from /3dtiles in any 3D Tiles viewer.</p>";
    return;
  }
  const viewer = new Cesium.Viewer("map", {
    baseLayer: false, baseLayerPicker: false, geocoder: false, timeline: false,
    animation: false, sceneModePicker: false, navigationHelpButton: false,
    infoBox: false, selectionIndicator: false,
  });
  viewer.scene.globe.baseColor = Cesium.Color.fromCssColorString("#dfe3e6");
  const list = await (await fetch(withQuery("/3dtiles"))).json();
  const select = document.getElementById("scene");
  for (const s of list.scenes) select.add(new Option(s.title, s.tileset));
  let current = null;

  async function load() {
    if (current) viewer.scene.primitives.remove(current);
    current = null;
    if (!select.value) return;
    const asof = document.getElementById("asof").value;
    const url = withQuery(select.value, { "as-of": asof ? new Date(asof).toISOString() : "" });
    current = await Cesium.Cesium3DTileset.fromUrl(url);
    // What has loaded, on the page for whoever checks it (a person, or a headless test).
    let features = 0;
    document.body.dataset.loaded = "no";
    current.tileLoad.addEventListener((tile) => {
      features += tile.content.featuresLength;
      document.body.dataset.features = String(features);
    });
    current.tileFailed.addEventListener((e) => { document.body.dataset.failed = e.url; });
    current.allTilesLoaded.addEventListener(() => { document.body.dataset.loaded = "yes"; });
    current.style = new Cesium.Cesium3DTileStyle({
      color: { conditions: [["${_height} >= 40", "color('#8c6d9e')"],
                            ["${_height} >= 15", "color('#b9a6c6')"],
                            ["true", "color('#ece7f0')"]] },
    });
    viewer.scene.primitives.add(current);
    await viewer.zoomTo(current, new Cesium.HeadingPitchRange(
      0.4, -0.8, current.boundingSphere.radius * 1.6));
  }

  select.addEventListener("change", load);
  document.getElementById("asof").addEventListener("change", load);
  new Cesium.ScreenSpaceEventHandler(viewer.scene.canvas).setInputAction(
    (click) => show(viewer.scene.pick(click.position)),
    Cesium.ScreenSpaceEventType.LEFT_CLICK);
  if (!list.scenes.length) {
    panel.innerHTML = '<p class="hint">No 3D scene is open to you.</p>';
    return;
  }
  await load();
}

main().catch((e) => { panel.innerHTML = `<p class="hint">${escape(String(e))}</p>`; });
