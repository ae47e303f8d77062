// The measurements that the page checks of tests/test_book_html.py judge, taken in the rendered page (CSS
// pixels). A function of one argument, the source of the regular expression of names that point outside the
// book; tests/test_book_html.py calls it in the page and decides what fails (tolerances, rules).
(forbidden) => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const style = getComputedStyle(article), box = article.getBoundingClientRect();
  const left = box.left + parseFloat(style.paddingLeft) + parseFloat(style.borderLeftWidth);
  const right = box.right - parseFloat(style.paddingRight) - parseFloat(style.borderRightWidth);
  const column = {left, right, width: right - left};
  const cells = [...article.querySelectorAll('div.cell')];
  const squash = s => (s || '').replace(/\s+/g, ' ').trim();
  const shown = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const describe = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    [...el.classList].filter(c => !/^(docutils|container|notranslate|lm-|p-)/.test(c)).slice(0, 3)
      .map(c => '.' + c).join('');
  const where = el => {
    const cell = el.closest('div.cell'), section = el.closest('section[id]');
    const heading = section && section.querySelector(':scope > h1, :scope > h2, :scope > h3, :scope > h4');
    return {cell: cell ? cells.indexOf(cell) + 1 : null, section: section ? section.id : null,
            heading: heading ? squash(heading.textContent).replace(/#$/, '').slice(0, 60) : null,
            element: describe(el), id: (el.closest('[id]') || {}).id || null};
  };
  const clipping = el => {  // the nearest ancestor (inside the article) that scrolls or cuts el's content
    for (let a = el.parentElement; a && a !== article.parentElement; a = a.parentElement) {
      const x = getComputedStyle(a).overflowX;
      if (x !== 'visible' && a.scrollWidth > a.clientWidth + 1)
        return {element: describe(a), shows: a.clientWidth, content: a.scrollWidth, overflow: x};
    }
    return null;
  };
  const measure = (el, kind) => {
    const r = el.getBoundingClientRect();
    return {kind, where: where(el), text: squash(el.textContent).slice(0, 80), top: r.top + scrollY,
            left: r.left, right: r.right,
            width: Math.max(r.width, el.scrollWidth), scroll: el.scrollWidth, client: el.clientWidth,
            overflow: getComputedStyle(el).overflowX, clipped_by: clipping(el)};
  };
  // Only what could fail goes back (a table of a thousand cells would otherwise send a thousand rows).
  const suspect = m => m.right > column.right || m.left < column.left || m.width > column.width ||
    (m.overflow !== 'visible' && m.scroll > m.client) || m.clipped_by;
  // 1. Every table; every element of a cell output outside a table (tables are judged as tables).
  const wide = [];
  for (const table of article.querySelectorAll('table')) if (shown(table)) wide.push(measure(table, 'table'));
  for (const output of article.querySelectorAll('.cell_output')) {
    if (!shown(output)) continue;
    for (const d of [output, ...output.querySelectorAll('*')]) {
      if (d.closest('table') || d.querySelector('table') || !shown(d)) continue;
      const m = measure(d, 'cell output');
      if (suspect(m)) wide.push(m);
    }
  }
  // 2. Code cells: is the input on show, and what does it say.
  const code = cells.map(cell => {
    const input = cell.querySelector('.cell_input');
    const pre = input && input.querySelector('pre');
    return {where: where(cell), classes: cell.className, has_input: !!input,
            visible: !!input && shown(input) && !input.closest('details') &&
                     !/\btag_(hide-input|hide-cell|remove-input|remove-cell)\b/.test(cell.className),
            code: pre ? pre.textContent : ''};
  });
  // 3, 5. Images in the article; image links to other sites (badges) are links, not content.
  const images = [...article.querySelectorAll('img')].map(img => {
    const link = img.closest('a[href]'), r = img.getBoundingClientRect();
    const figure = img.closest('figure'), caption = figure && figure.querySelector('figcaption');
    return {where: where(img), src: img.getAttribute('src') || '', alt: img.getAttribute('alt'),
            shown: shown(img), folded: !shown(img) && !!img.closest('details:not([open])'),
            width: r.width, height: r.height, link: link ? link.href : null,
            badge: !!link && /^https?:/.test(link.href) && new URL(link.href).origin !== location.origin,
            widget: !!img.closest('.jupyter-widgets'), figure: !!figure,
            caption: caption ? squash(caption.textContent).slice(0, 80) : null,
            numbered: !!(caption && caption.querySelector('.caption-number'))};
  });
  // 4. Text (on show or one click away in a toggle) and links that name files outside the book. A name may be
  // split over several elements (syntax highlighting): the deepest element whose text holds it is reported.
  const named = text => new RegExp(forbidden).test(text);
  const mentions = [];
  const visit = el => {  // does el's text name one? (report el if none of its children's does)
    if (!named(el.textContent)) return false;
    if (el.matches('script, style, noscript, template')) return true;  // not text a reader sees
    let inChild = false;
    for (const child of el.children) inChild = visit(child) || inChild;
    if (!inChild) {
      const text = squash(el.textContent);
      for (const m of text.matchAll(new RegExp(forbidden, 'g')))
        mentions.push({where: where(el), match: m[0],
                       text: text.slice(Math.max(0, m.index - 40), m.index + m[0].length + 40)});
    }
    return true;
  };
  visit(document.body);
  const links = [...document.querySelectorAll('[href], [src]')].filter(el => !(el.tagName === 'LINK' &&
      /preconnect|dns-prefetch/.test(el.rel))).map(el => {
    const raw = el.getAttribute('href') !== null ? el.getAttribute('href') : el.getAttribute('src');
    let resolved = null;
    try { resolved = new URL(raw, location.href).href; } catch (e) {}
    return {where: where(el), raw, resolved, text: squash(el.textContent || el.getAttribute('alt') || '').slice(0, 80)};
  });
  return {url: location.href, column, wide, code, images, mentions, links};
}
